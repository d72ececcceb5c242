"""effects, checkpoint and log against fake host imports: the bytes sent and the errors mapped."""

import unittest

from tests import fakewit

HOST = fakewit.install()

from tollgate import ToolError, checkpoint, effects, log  # noqa: E402  (needs the fakes)


class Perform(unittest.TestCase):
    def setUp(self):
        self.host = fakewit.install()

    def test_sends_serde_json_compact_payload(self):
        invoice = {"invoice_id": "INV-1", "customer": "Zoë\n", "lines": [{"quantity": 2}], "total_cents": 2}
        outcome = effects.perform("erp.post-invoice", "post-invoice:INV-1", invoice)
        self.assertEqual(self.host.performed, [("erp.post-invoice", "post-invoice:INV-1",
            '{"invoice_id":"INV-1","customer":"Zoë\\n","lines":[{"quantity":2}],"total_cents":2}')])
        self.assertEqual((outcome.body_value(), outcome.replayed, outcome.dispatches), ({"id": "erp-1"}, False, 1))

    def test_str_payload_is_sent_as_is(self):
        effects.perform("k", "key", '{ "raw" : 1 }')
        self.assertEqual(self.host.performed[-1][2], '{ "raw" : 1 }')

    def test_a_key_that_is_not_utf8_is_refused_before_the_host_sees_it(self):
        with self.assertRaises(ToolError) as caught:
            effects.perform("k", "post-invoice:\udcff", {})
        self.assertEqual(caught.exception.cls, "validation")
        self.assertEqual(self.host.performed, [], "nothing reached the host")

    def test_host_error_is_raised_unchanged(self):
        self.host.error = fakewit.ToolError(fakewit.ErrorClass.CONFLICT, "key reused", '{"key":"k"}')
        with self.assertRaises(ToolError) as caught:
            effects.perform("k", "key", {})
        error = caught.exception
        self.assertEqual((error.cls, error.message, error.details, error.details_json),
                         ("conflict", "key reused", {"key": "k"}, '{"key":"k"}'))

    def test_every_class_maps_both_ways(self):
        from tollgate import bindings
        for wit_class in fakewit.ErrorClass:
            wit = fakewit.ToolError(wit_class, "m", None)
            self.assertEqual(bindings.to_wit(bindings.from_wit(wit)), wit)

    def test_unserializable_payload_is_fatal_and_not_sent(self):
        with self.assertRaises(ToolError) as caught:
            effects.perform("k", "key", {"when": object()})
        self.assertEqual(caught.exception.cls, "fatal")
        self.assertTrue(caught.exception.message.startswith("effect `k` payload: "))
        self.assertEqual(self.host.performed, [])


class Checkpoints(unittest.TestCase):
    def setUp(self):
        self.host = fakewit.install()

    def test_save_load_latest(self):
        self.assertIsNone(checkpoint.load("validated"))
        checkpoint.save("validated", {"invoice_id": "INV-1", "total_cents": 5})
        self.assertEqual(self.host.saved["validated"].state, b'{"invoice_id":"INV-1","total_cents":5}')
        self.assertEqual(checkpoint.load("validated"), {"invoice_id": "INV-1", "total_cents": 5})
        self.assertEqual(checkpoint.latest().name, "validated")


class Log(unittest.TestCase):
    def test_fields_are_stringified_in_order(self):
        host = fakewit.install()
        log.info("validated", invoice_id="INV-1", total_cents=5, ok=True)
        self.assertEqual(host.events, [(fakewit.Level.INFO, "validated",
                                        [("invoice_id", "INV-1"), ("total_cents", "5"), ("ok", "true")])])


if __name__ == "__main__":
    unittest.main()
