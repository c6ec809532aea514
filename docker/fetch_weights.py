"""Pre-download the pinned model weights: `python docker/fetch_weights.py --dir /opt/weights`.

The pins (repository and commit of TRELLIS.2-4B, its sparse-structure decoder, DINOv3 and
BiRefNet) live in one place, `pipeline/weights.py`, which the server also reads to find the
weights and to fetch what is missing at start-up (FETCH_WEIGHTS=true). DINOv3 is gated: set
HF_TOKEN to a token of an account that accepted its licence. `--list` prints the pins.
Run from the repository root (or with the package installed).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.weights import main

if __name__ == "__main__":
    sys.exit(main())
