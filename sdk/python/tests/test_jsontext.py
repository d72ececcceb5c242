"""jsontext must write the bytes serde_json writes: the host compares payload bytes."""

import unittest

from tollgate import jsontext


class DumpsMatchesSerdeJson(unittest.TestCase):
    def test_compact_and_in_dict_order(self):
        value = {"invoice_id": "INV-1", "lines": [{"quantity": 2, "ok": True, "n": None}], "a": []}
        self.assertEqual(jsontext.dumps(value),
                         '{"invoice_id":"INV-1","lines":[{"quantity":2,"ok":true,"n":null}],"a":[]}')

    def test_non_ascii_stays_utf8(self):
        self.assertEqual(jsontext.dumps({"customer": "Zoë Ünlü — 東京 🚀"}),
                         '{"customer":"Zoë Ünlü — 東京 🚀"}')

    def test_escapes_exactly_like_serde_json(self):
        # serde_json: \" \\ \b \f \n \r \t, other C0 controls as \u00xx (lowercase); DEL,
        # U+2028 and "/" are not escaped.
        text = "".join(map(chr, range(0x20))) + '"\\/\x7f\u2028'
        expected = ('"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b'
                    '\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017'
                    '\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\"\\\\/\x7f\u2028"')
        self.assertEqual(jsontext.dumps(text), expected)

    def test_integers_of_any_size(self):
        self.assertEqual(jsontext.dumps([0, -1, 2**64 - 1, 2**70]),
                         "[0,-1,18446744073709551615,1180591620717411303424]")

    def test_floats_in_serde_json_form(self):
        # Expected strings are serde_json 1.0.154's (zmij) output for the same f64.
        cases = [
            (1.0, "1.0"), (-0.0, "-0.0"), (0.0, "0.0"), (0.1, "0.1"), (123.456, "123.456"),
            (1e15, "1000000000000000.0"), (1e16, "1e+16"), (1.5e16, "1.5e+16"),
            (5.444310685350916e14, "544431068535091.6"), (3.439070283483335e35, "3.439070283483335e+35"),
            (1e-5, "0.00001"), (1.5e-5, "0.000015"), (1e-6, "1e-6"),
            (2.9802322387695312e-08, "2.9802322387695312e-8"), (5e-324, "5e-324"),
            (-4.932096661796888e-226, "-4.932096661796888e-226"), (6.62607015e-34, "6.62607015e-34"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ]
        for value, expected in cases:
            with self.subTest(value=value):
                self.assertEqual(jsontext.dumps(value), expected)

    def test_tuples_are_arrays_and_keys_are_strings(self):
        self.assertEqual(jsontext.dumps({1: (1, 2), False: None, 0.5: 1}), '{"1":[1,2],"false":null,"0.5":1}')

    def test_not_json_able_values_are_errors(self):
        for value in [{1, 2}, object(), float("nan"), float("inf"), {(1,): 2}, "\ud800"]:
            with self.subTest(value=value):
                with self.assertRaises((TypeError, ValueError)):
                    jsontext.dumps(value)
        loop = []
        loop.append(loop)
        with self.assertRaises(ValueError):
            jsontext.dumps(loop)


class Loads(unittest.TestCase):
    def test_rejects_what_serde_json_rejects(self):
        for text in ["NaN", "[Infinity]", "-Infinity", "1e400", "{", ""]:
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    jsontext.loads(text)

    def test_duplicate_keys_only_when_asked(self):
        self.assertEqual(jsontext.loads('{"a":1,"a":2}'), {"a": 2})
        with self.assertRaisesRegex(ValueError, "duplicate field `a`"):
            jsontext.loads('{"a":1,"a":2}', unique_keys=True)

    def test_round_trip_keeps_order(self):
        text = '{"z":1,"a":[1.5,"x",null]}'
        self.assertEqual(jsontext.dumps(jsontext.loads(text)), text)


class FieldText(unittest.TestCase):
    def test_strings_verbatim_others_as_json(self):
        self.assertEqual(jsontext.field_text("INV-1"), "INV-1")
        self.assertEqual(jsontext.field_text(42), "42")
        self.assertEqual(jsontext.field_text(True), "true")
        self.assertEqual(jsontext.field_text({"a": [1]}), '{"a":[1]}')
        self.assertEqual(jsontext.field_text({1, 2}), "{1, 2}")


if __name__ == "__main__":
    unittest.main()


class WireTextTest(unittest.TestCase):
    def test_valid_text_is_unchanged_and_a_lone_surrogate_is_escaped(self):
        from tollgate.jsontext import wire_text

        self.assertEqual(wire_text("Grüße 東京"), "Grüße 東京")
        escaped = wire_text("file-\udcff.txt")
        self.assertEqual(escaped, "file-\\udcff.txt")
        escaped.encode("utf-8")  # carries over the ABI
