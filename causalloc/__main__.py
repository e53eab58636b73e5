import sys

from causalloc.cli import main

sys.exit(main())
