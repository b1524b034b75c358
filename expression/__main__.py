"""`python -m expression COMMAND ...`: the scripts of an installed package (see expression.commands)."""
import sys

from expression.commands import main

sys.exit(main())
