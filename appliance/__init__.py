"""The appliance's control plane: configuration, data plane set-up, policy, lists and the CLI."""

__version__ = "0.1.0"
