"""The hub: pulls segments from edges into object storage and serves the API (issues 3-5)."""
