"""Not from the seed: tells the client who the session says it is."""

from headrace.generic.websocket import AsyncJsonWebsocketConsumer


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.accept()
        user = self.scope["user"]
        await self.send_json(
            {"authenticated": user.is_authenticated, "username": user.get_username()}
        )
