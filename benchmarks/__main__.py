"""`python -m benchmarks`."""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) buries the suite's progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.cli import main  # noqa: E402

raise SystemExit(main())
