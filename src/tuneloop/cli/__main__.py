from tuneloop.cli import app

# The guard matters: vLLM starts its engine in a spawned process, which imports this module again.
if __name__ == "__main__":
    app()
