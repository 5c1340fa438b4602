import sys

from cifarlab.launch import main

sys.exit(main())
