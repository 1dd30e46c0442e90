# progrock/consumers.py from the seed, written as Channels 2+ consumers with `channels` replaced
# by `headrace` in the import lines. What Channels 2+ needs that Channels 1 did not: a "type"
# in every message (it names the handler), and `channel_layer.send` instead of `Channel(...)`.
#
# Not in the seed: the interval and the step come from settings (PROGROCK_DELAY_MS,
# PROGROCK_STEP; the seed's 200 ms and +3 by default) so the tests can run the same code fast.
import json

from asgiref.sync import async_to_sync
from django.conf import settings

from headrace.consumer import SyncConsumer
from headrace.generic.websocket import WebsocketConsumer


class ProgRockConsumer(WebsocketConsumer):
    """ws_connect and ws_receive: the public side."""

    def connect(self):
        self.accept()
        self.send(text_data=json.dumps({"accept": True}))

    def receive(self, text_data=None, bytes_data=None):
        data = json.loads(text_data)
        reply_channel = self.channel_name

        if data["action"] == "start":
            async_to_sync(self.channel_layer.send)(
                "prog-rocker",
                {
                    "type": "prog.rock",
                    "reply_channel": reply_channel,
                    "action": "start",
                },
            )

    def ws_send(self, event):
        # What the worker sends to this connection's channel goes out to the client.
        self.send(text_data=event["text"])


class ProgRocker(SyncConsumer):
    """The worker on the prog-rocker channel: the seed's `worker(msg)`."""

    def prog_rock(self, msg):
        def delayed_message(reply_channel, progress, action):
            return {
                "channel": "prog-rocker",
                "content": {
                    "type": "prog.rock",
                    "reply_channel": reply_channel,
                    "action": action,
                    "progress": progress,
                },
                "delay": getattr(settings, "PROGROCK_DELAY_MS", 200),
            }

        def delayed_send(msg):
            async_to_sync(self.channel_layer.send)("asgi.delay", msg)

        def send_to_ws(reply_channel, content):
            async_to_sync(self.channel_layer.send)(
                reply_channel, {"type": "ws.send", "text": json.dumps(content)}
            )

        def send_progress(reply_channel, progress):
            send_to_ws(reply_channel, {"progress": progress})

        action = msg["action"]
        reply = msg["reply_channel"]

        if action == "start":
            # start a long running background task!
            # (this is just a mockup, using number to represent the progress of a background task)
            progress = 0

            send_progress(reply, progress)

            new_msg = delayed_message(reply, progress, "continue")
            delayed_send(new_msg)

        elif action == "continue":
            # check in on the background task
            # (we are simulating a task by incrementing a number)
            progress = msg["progress"] + getattr(settings, "PROGROCK_STEP", 3)
            if progress >= 100:
                send_to_ws(reply, {"complete": True, "progress": 100})
            else:
                send_progress(reply, progress)
                new_msg = delayed_message(reply, progress, "continue")
                delayed_send(new_msg)
