import sys

from adaptrl.cli import main

sys.exit(main())
