"""Allow ``python -m healthflow.cli``."""

from healthflow.cli.main import app

app(prog_name="healthflow")
