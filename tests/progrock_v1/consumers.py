# progrock/consumers.py as printed in the seed (realtime-progress-updates.txt), pasted unchanged
# except for:
#   - the import line: `from channels import Channel` -> `from headrace.compat.v1 import Channel`;
#   - lines the seed's text lost (its extraction dropped some lines of the article's code), each
#     restored where the article's prose and indentation show it and marked `# restored`;
#   - ws_receive sends 'action' where the article's ws_receive sends 'command': the article's own
#     worker reads msg.content['action'], so as printed the worker would fail with KeyError.
# fmt: off
import json

from headrace.compat.v1 import Channel


def ws_connect(msg):
    msg.reply_channel.send({'text': json.dumps({"accept": True})})

def ws_receive(message):
    data = json.loads(message['text'])
    reply_channel = message.reply_channel.name  # restored

    if data['action'] == 'start':
        Channel('prog-rocker').send({  # restored
            'reply_channel': reply_channel,
            'action': 'start',  # the article: 'command': 'start' (see above)
        })  # restored

def worker(msg):
    def delayed_message(reply_channel, progress, action):
        return {
            'channel': 'prog-rocker',
            'content': {
                'reply_channel': reply_channel,
                'action': action,
                'progress': progress,
            },
            'delay': 200
        }

    def delayed_send(msg):
        Channel('asgi.delay').send(msg, immediately=True)

    def send_to_ws(reply_channel, content):
        Channel(reply_channel).send({'text': json.dumps(content)})

    def send_progress(reply_channel, progress):
        send_to_ws(reply_channel, {'progress': progress})

    action = msg.content['action']
    reply = msg.content['reply_channel']

    if action == 'start':
        # start a long running background task!
        # (this is just a mockup, using number to represent the progress of a background task)
        progress = 0

        send_progress(reply, progress)

        new_msg = delayed_message(reply, progress, 'continue')
        delayed_send(new_msg)  # restored

    elif action == 'continue':
        # check in on the background task
        # (we are simulating a task by incrementing a number)
        progress = msg.content['progress'] + 3
        if progress >= 100:
            send_to_ws(reply, {'complete': True, 'progress': 100})
        else:  # restored
            send_progress(reply, progress)
            new_msg = delayed_message(reply, progress, 'continue')
            delayed_send(new_msg)  # restored
