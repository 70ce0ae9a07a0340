import asyncio

import aioring


async def test_running_loop_type():
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.001)
    assert loop.is_running()
    assert not loop.is_closed()


def test_run_returns_result_on_aioring():
    async def main():
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())
    assert aioring.run(main()) is aioring.Loop
