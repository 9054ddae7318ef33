"""``python -m qcluster serve ...``"""

import sys

from qcluster.cli import main

sys.exit(main())
