"""The proxies' connection log: what the writer writes, the reader beside it reads back checked."""

import pytest

from robe.proxy.connlog import ConnLog, ConnLogError, as_event, read_events


def test_written_events_read_back_as_records(tmp_path):
    path = tmp_path / "proxy.log"
    log = ConnLog(str(path), "client_proxy")
    log.event("accepted", "c1", peer="198.18.1.1:4000")
    log.event("closed", "c1", dst="198.19.0.3:443", bytes_up=10, bytes_down=20, error=None, last_down_ns=5)
    events, offset = read_events(path, 0)
    assert [e["event"] for e in events] == ["accepted", "closed"]
    assert events[1]["role"] == "client_proxy" and events[1]["bytes_down"] == 20 and events[1]["last_down_ns"] == 5
    assert offset == path.stat().st_size
    log.event("refused", "c2", dst=None, reason="no original destination")
    later, _ = read_events(path, offset)
    assert [e["conn"] for e in later] == ["c2"]
    log.close()


def test_the_writer_knows_its_events():
    with pytest.raises(ValueError, match="event='acepted': not a connection-log event"):
        ConnLog(None, "haap").event("acepted", "c1")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"event": "accepted", "t_ns": 1, "role": "haap"}, "conn=None: missing or not a str"),
        ({"event": "accepted", "t_ns": "1", "role": "haap", "conn": "c"}, "t_ns='1': missing or not a int"),
        ({"event": "opened", "t_ns": 1, "role": "haap", "conn": "c"}, "event='opened': unknown"),
        ([1, 2], r"\[1, 2\] is not an object"),
    ],
)
def test_the_reader_names_a_bad_line(line, message):
    with pytest.raises(ConnLogError, match=message):
        as_event(line, "haap.log")
