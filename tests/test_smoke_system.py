import asyncio

import aiohttp


def test_system_answers_a_frame(system, speech):
    import soundfile as sf, io
    samples, rate = sf.read(speech("sample1.wav"), dtype="int16")
    buf = io.BytesIO(); sf.write(buf, samples[:rate // 10], rate, format="WAV", subtype="PCM_16")

    async def go():
        async with aiohttp.ClientSession() as s, s.ws_connect(system.ws_url) as ws:
            await ws.send_str("ACCOUNTCODE=smoke")
            await ws.send_bytes(buf.getvalue())
            return await ws.receive_json()
    reply = asyncio.run(go())
    assert reply["account"] == "smoke" and reply["seq"] == 1 and reply["voice"] in (0, 1)
    assert len(system.account_log("smoke")) == 1
