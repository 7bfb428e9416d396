"""The asset folder (sample documents, the dev set, the bundled model), installed as the package retnet_rag_data."""
