"""Adapter for the UCI Diabetes 130-US hospitals data set (1999-2008)."""
