"""The file to give ``swift sft --external_plugins``: swift imports it by path, so it only imports the package.

Get its absolute path with ``python -m swift_lingudistill plugin-path``. swift puts this file's folder first on
``sys.path`` for the rest of the process (``swift.utils.import_external_file``), so the folder holds this file
alone, under a name no other module has: nothing of the package becomes importable by a bare name.
"""

from swift_lingudistill.integration.registration import register

register()
