"""MONAI Label app over the essa-monai bundles.

The app folder is this package's folder (:data:`APP_DIR`): ``monailabel start_server --app
essa_monai/monailabel_app ...`` (see ``main.py`` and the README). :mod:`.served_bundle` and
:mod:`.datastore_labels` work without MONAI Label; the tasks and the app need the ``monailabel`` extra.
"""

from pathlib import Path

__all__ = ["APP_DIR"]

#: the folder to pass to ``monailabel start_server --app``
APP_DIR = Path(__file__).resolve().parent
