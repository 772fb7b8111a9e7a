"""The console example under asyncio."""

from __future__ import annotations

import asyncio

from kernel_nursery import start_kernel


async def answer(prompt: str, password: bool) -> str:
    return "hunter2" if password else "Ada"


async def main() -> None:
    async with start_kernel("python3") as km, km.client(stdin_handler=answer) as kc:
        check = await kc.is_complete("for i in range(3):")
        print("is_complete:", check.status, repr(check.content.get("indent")))

        completion = await kc.complete("import o")
        print("completes to os:", "os" in completion.content["matches"])

        help_text = await kc.inspect("len")
        print("len documented:", help_text.content["found"])

        code = (
            "import getpass\nname = input('name: ')\npw = getpass.getpass()\nprint(name, len(pw))"
        )
        result = await kc.execute(code, timeout=30)
        print("output:", result.stdout.strip())

        history = await kc.history(hist_access_type="tail", n=1)
        print("last input:", history.content["history"][-1][2].splitlines()[0])


asyncio.run(main())
