"""Brains with a model: wire backends (Ollama, OpenAI-compatible, scripted), the recorded call
session with budgets and fallbacks, replay from recorded answers, and `build_brain` from settings."""
