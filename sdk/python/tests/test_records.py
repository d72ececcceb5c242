import unittest

from tollgate import Checkpoint, Context, Outcome, ToolError


class OutcomeBody(unittest.TestCase):
    def test_body_value_parses_json_and_keeps_text_as_a_string(self):
        self.assertEqual(Outcome('{"id":"erp-1"}', False, 1).body_value(), {"id": "erp-1"})
        self.assertEqual(Outcome("accepted", False, 1).body_value(), "accepted")
        self.assertEqual(Outcome('"quoted"', True, 1).body_value(), "quoted")
        self.assertEqual(Outcome("", False, 1).body_value(), "")

    def test_json_of_a_non_json_body_is_fatal(self):
        with self.assertRaises(ToolError) as caught:
            Outcome("accepted", False, 1).json()
        self.assertEqual(caught.exception.cls, "fatal")
        self.assertTrue(caught.exception.message.startswith("effect outcome: "))


class CheckpointState(unittest.TestCase):
    def test_json_reads_utf8_json(self):
        self.assertEqual(Checkpoint("v", '{"a":"ü"}'.encode(), 1).json(), {"a": "ü"})

    def test_bad_state_is_fatal_and_names_the_checkpoint(self):
        for state in [b"not json", b"\xff"]:
            with self.assertRaises(ToolError) as caught:
                Checkpoint("validated", state, 1).json()
            self.assertEqual(caught.exception.cls, "fatal")
            self.assertTrue(caught.exception.message.startswith("checkpoint `validated`: "))


class ContextRemaining(unittest.TestCase):
    def test_is_zero_after_the_deadline(self):
        self.assertEqual(Context("r", 1, "t", 0).remaining(), 0.0)
        self.assertGreater(Context("r", 1, "t", 2**53).remaining(), 1e9)


if __name__ == "__main__":
    unittest.main()
