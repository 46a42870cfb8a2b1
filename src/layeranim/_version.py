"""The package version, in its own module so that no library module imports the package root for it."""

__version__ = "0.1.0"
