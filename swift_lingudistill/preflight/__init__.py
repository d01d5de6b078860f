"""What can be checked before the student loads, without ms-swift: dataset files read as a stream (tags,
images, token lengths through a measuring function the caller supplies), the teacher's files (remote code,
finite weights). ``integration.preflight`` runs it from swift's pipeline and from ``tag-report``."""

from .images import check_images as check_images
from .images import image_refs as image_refs
from .rows import PreflightError as PreflightError
from .rows import read_rows as read_rows
from .scan import BadRow as BadRow
from .scan import RowTooLong as RowTooLong
from .scan import ScanResult as ScanResult
from .scan import bad_rows_error as bad_rows_error
from .scan import scan_rows as scan_rows
from .teacher_files import nonfinite_tensors as nonfinite_tensors
from .teacher_files import remote_code_reasons as remote_code_reasons
