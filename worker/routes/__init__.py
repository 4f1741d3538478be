"""The worker's HTTP routes as blueprints (the speaker API's is
worker/speakers/routes.py). Views reach the process's Worker through
worker/context.py's current_worker()."""
