"""``--external_plugins examples/miniature/plugin.py``: registers the miniature's template (small token ids).

swift imports this file under a hashed module name with its folder on ``sys.path``, so ``minirepro`` imports.
"""

from minirepro.template import register

register()
