import sys
from pathlib import Path

# make the repository root importable (``data`` is not an installed package)
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
