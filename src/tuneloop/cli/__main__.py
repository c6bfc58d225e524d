from tuneloop.cli import app

app()
