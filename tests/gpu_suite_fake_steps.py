"""Steps for tests/test_gpu_suite.py's checks of the suite's budget and deadlines (the
suite imports a step by ``module:function`` in a process of its own)."""
import time


def quick(ctx):
    ctx.figure("answer", 42)


def slow(ctx):
    ctx.figure("before_the_deadline", "kept")
    time.sleep(60)
    ctx.figure("after_the_deadline", "never")


def broken(ctx):
    ctx.figure("partial", 1)
    raise RuntimeError("this step is broken on purpose")
