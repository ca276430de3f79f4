"""Shared by the restart scripts (durable.py, priority.py): takes every message left in a
queue with basic.get, acking each, and says what came in which order."""


def get_all(channel, queue):
    """(bodies, redelivered flags) of every message `queue` still holds, in delivery order."""
    bodies, redelivered = [], []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return bodies, redelivered
        bodies.append(body.decode())
        redelivered.append(method.redelivered)
        channel.basic_ack(method.delivery_tag)
