"""The `chatgpt_login` plugin family (see `gateway_plugins.chatgpt_login.plugin`)."""

from gateway_plugins.chatgpt_login.plugin import ChatGPTLogin

__all__ = ["ChatGPTLogin"]
