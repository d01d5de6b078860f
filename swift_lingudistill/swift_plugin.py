"""The file to give ``swift sft --external_plugins``: swift imports it by path, so it only imports the package.

Get its absolute path with ``python -m swift_lingudistill plugin-path``.
"""

from swift_lingudistill.integration.registration import register

register()
