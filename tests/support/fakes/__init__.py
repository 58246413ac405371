"""Third-party providers faked by real local HTTP servers that speak their wire protocols.

Each fake is started and stopped by the test that uses it (``async with TwilioFake() as fake``),
records every request it receives and can be told to fail or to answer slowly; ``http`` holds
what they share.
"""
