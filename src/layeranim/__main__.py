"""`python -m layeranim` runs the command line."""

from layeranim.cli import main

if __name__ == "__main__":
    main()
