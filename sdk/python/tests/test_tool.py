"""Tool.handle and the exported world: JSON in, JSON out, every failure classified."""

import unittest

from tests import fakewit
from tollgate import Context, Tool, ToolError

CTX = Context("run-2026-01-01-x", 2, "greeter", 1)


def greeter():
    tool = Tool("greeter", "1.2.3", "Greets someone.", {"type": "object", "title": "In"},
                effects=["mail.send"])

    @tool.run
    def run(ctx, input):
        if input.get("explode"):
            raise KeyError("boom")
        if input.get("name") == "":
            raise ToolError.validation("name is empty", {"field": "name"})
        if input.get("set"):
            return {1, 2}
        return {"greeting": f"hello, {input['name']}", "run_id": ctx.run_id, "attempt": ctx.attempt}

    return tool


class Handle(unittest.TestCase):
    def setUp(self):
        self.tool = greeter()

    def error(self, text):
        with self.assertRaises(ToolError) as caught:
            self.tool.handle(CTX, text)
        return caught.exception

    def test_passes_context_and_serializes_output(self):
        self.assertEqual(self.tool.handle(CTX, '{"name":"Ada"}'),
                         '{"greeting":"hello, Ada","run_id":"run-2026-01-01-x","attempt":2}')

    def test_bad_input_json_is_validation(self):
        error = self.error("not json")
        self.assertEqual(error.cls, "validation")
        self.assertTrue(error.message.startswith("input: Expecting value"), error.message)
        self.assertEqual(self.error('{"name":"a","name":"b"}').message, "input: duplicate field `name`")

    def test_tool_errors_pass_through_with_details(self):
        error = self.error('{"name":""}')
        self.assertEqual((error.cls, error.message, error.details),
                         ("validation", "name is empty", {"field": "name"}))

    def test_uncaught_exception_is_fatal_with_cause(self):
        error = self.error('{"explode":true}')
        self.assertEqual((error.cls, error.message), ("fatal", "unhandled KeyError: 'boom'"))
        self.assertIsInstance(error.__cause__, KeyError)

    def test_output_that_is_not_json_is_fatal(self):
        error = self.error('{"set":true}')
        self.assertEqual((error.cls, error.message),
                         ("fatal", "output: Object of type set is not JSON serializable"))

    def test_no_run_function_is_fatal(self):
        with self.assertRaises(ToolError) as caught:
            Tool("t", "0", "d", {}).handle(CTX, "{}")
        self.assertEqual(caught.exception.cls, "fatal")


class World(unittest.TestCase):
    def setUp(self):
        self.host = fakewit.install()
        self.world = greeter().world()()

    def test_describe(self):
        descriptor = self.world.describe()
        self.assertEqual((descriptor.name, descriptor.version, descriptor.description),
                         ("greeter", "1.2.3", "Greets someone."))
        self.assertEqual(descriptor.input_schema, '{"type":"object","title":"In"}')
        self.assertEqual((descriptor.effects, descriptor.capabilities), (["mail.send"], []))

    def test_run_returns_json_text(self):
        ctx = fakewit.RunContext("run-1", 1, "greeter", 1)
        self.assertEqual(self.world.run(ctx, '{"name":"Ada"}'),
                         '{"greeting":"hello, Ada","run_id":"run-1","attempt":1}')

    def test_errors_become_err_of_wit_tool_error(self):
        ctx = fakewit.RunContext("run-1", 1, "greeter", 1)
        with self.assertRaises(fakewit.Err) as caught:
            self.world.run(ctx, '{"name":""}')
        self.assertEqual(caught.exception.value, fakewit.ToolError(
            fakewit.ErrorClass.VALIDATION, "name is empty", '{"field":"name"}'))

    def test_unhandled_exception_is_fatal_and_logs_its_traceback(self):
        ctx = fakewit.RunContext("run-1", 1, "greeter", 1)
        with self.assertRaises(fakewit.Err) as caught:
            self.world.run(ctx, '{"explode":true}')
        self.assertEqual(caught.exception.value, fakewit.ToolError(
            fakewit.ErrorClass.FATAL, "unhandled KeyError: 'boom'", None))
        level, message, fields = self.host.events[-1]
        self.assertEqual((level, message, fields[0][0]), (fakewit.Level.ERROR, "unhandled exception", "traceback"))
        self.assertIn("KeyError: 'boom'", fields[0][1])


if __name__ == "__main__":
    unittest.main()
