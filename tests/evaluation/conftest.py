"""The evaluation runs the app's reader: reuse the app tests' tiny models and tokenizers."""

from tests.app.conftest import one_torch_thread, special_model, special_reader, special_tok, tiny_model_dir  # noqa: F401
