# stats/_logline.c: the access log's text line (AccessLog.format_text's, in UTF-8)
# appended to the log's buffer in one C call.

def append_text(
    out: bytearray,
    client: str,
    bracketed: str,
    frontend: str,
    backend: str,
    server: str,
    t_request: int,
    t_queue: int,
    t_connect: int,
    t_response: int,
    t_total: int,
    status: int,
    bytes_out: int,
    termination: str,
    request_line: str,
    xff: str,
    /,
) -> None: ...
