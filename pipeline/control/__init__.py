"""The control plane: the projector (EVENTS -> KV state), reading that state, the controller
that starts and stops work, and session admission."""
