"""hindsight: teach language models from their users' follow-up messages, and measure whether it worked."""

__version__ = "0.1.0"
