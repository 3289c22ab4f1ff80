import os
import signal
import time

from test_dataplane import gateway, processes_in  # noqa


def test_dbg(gateway):
    unbound = [pid for pid, name in processes_in(gateway.gw) if name == "unbound"]
    os.kill(unbound[0], signal.SIGKILL)
    time.sleep(2.5)
    print(processes_in(gateway.gw))
    gateway.process.send_signal(signal.SIGTERM)
    time.sleep(3)
    print("poll", gateway.process.poll())
    gateway.process.send_signal(signal.SIGABRT)
    time.sleep(1)
    print(gateway.process.stdout.read()[-5000:])
    assert 0
