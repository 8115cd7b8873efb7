"""A self-hosted, plugin-driven API gateway for the ChatGPT web backend and the OpenAI API."""

__version__ = "0.1.0"
