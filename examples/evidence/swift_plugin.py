"""``--external_plugins examples/evidence/swift_plugin.py``: registers the harness's template (small token ids).

swift imports this file under a hashed module name with its folder on ``sys.path``, so ``mechanism`` imports.
"""

from mechanism.template import register

register()
