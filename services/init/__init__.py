"""init: specifies and builds the paper's environment, validates it with a smoke run, requests the baseline."""
