"""Run the zslr CLI with the test backbone registered: ``python -m tests.index.run_zslr index ...``."""
import sys

import tests.index.fakes  # noqa: F401  (registers tiny-test)
from zslretrieval.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
