"""An A2A client (the official `a2a-sdk`): reads the agent card at URL, then sends one message to
the address the card names, and prints the card's interface URL and the agent's reply as JSON.

Usage: python a2a_client.py URL TEXT
"""

import asyncio
import json
import sys

import httpx
from google.protobuf.json_format import MessageToDict

from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import A2ACardResolver
from a2a.helpers.proto_helpers import new_text_message
from a2a.types.a2a_pb2 import Role, SendMessageRequest


async def main(url: str, text: str) -> None:
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
        request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
        replies = [MessageToDict(event) async for event in client.send_message(request)]
    print(json.dumps({"card_url": card.supported_interfaces[0].url, "replies": replies}))


asyncio.run(main(sys.argv[1], sys.argv[2]))
