"""Instances: places where workers run, each watched by a ``tessera agent``.

- :mod:`.base`: the :class:`~.base.InstanceProvider` protocol, its values and errors, and
  :func:`~.base.load_provider` (``--instance-provider``).
- :mod:`.reaping`: pure decisions: what to terminate, room per kind, where work goes.
- :mod:`.control`: the controller's side of the agent protocol (start/stop a worker there).
- :mod:`.settings`: the instance settings (:class:`~.settings.InstanceConfig`).
- :mod:`.polling`: the bounded wait the providers share for "ready".
- Providers: :mod:`.local` (agent processes), :mod:`.docker`, :mod:`.ec2`, :mod:`.nomad`;
  imported only when chosen, so their SDKs load only when used.
"""
