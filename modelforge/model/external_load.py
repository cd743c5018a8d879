"""Loading external tensor data, only from files that passed :func:`check_external_data`.

onnx's own loader re-validates locations and refuses hard links, which the store uses for
its blobs; this loader reads exactly the checked files instead (offset/length already
verified against their sizes), and re-checks with ``fstat`` that each is still a regular
file.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from modelforge.errors import UnsafeModelError
from modelforge.model.external import ExternalFile, iter_tensors, normalized_location
from modelforge.text import escape

if TYPE_CHECKING:
    from onnx import ModelProto


def load_checked_external_data(model: ModelProto, files: list[ExternalFile]) -> None:
    """Replace every external reference of ``model`` (in place) by the bytes it names."""
    from onnx import TensorProto

    paths = {f.location: f.path for f in files}
    for tensor in iter_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = normalized_location(info.get("location", ""))
        if location not in paths:
            raise UnsafeModelError(
                f"tensor '{escape(tensor.name)}' names external data '{escape(location)}' "
                "that was not checked",
                code="unsafe_external_data",
            )
        offset = int(info.get("offset", 0) or 0)
        fd = os.open(paths[location], os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeModelError(
                    f"external data '{escape(location)}' is no longer a regular file",
                    code="unsafe_external_data",
                )
            length = int(info["length"]) if "length" in info else st.st_size - offset
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise UnsafeModelError(
                f"external data '{escape(location)}' changed while being read",
                code="external_data_invalid",
            )
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
