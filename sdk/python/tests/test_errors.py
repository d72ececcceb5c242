"""ToolError: classes match the WIT, details travel as JSON text, host errors map back."""

import pathlib
import re
import unittest

from tollgate import CLASSES, ToolError

WIT = pathlib.Path(__file__).resolve().parents[3] / "wit" / "types.wit"


class Classes(unittest.TestCase):
    def test_match_the_wit_enum_in_order(self):
        self.assertTrue(WIT.exists(), f"{WIT} not found: the SDK is tested against the WIT it implements")
        body = re.search(r"enum error-class \{(.*?)\}", WIT.read_text(), re.S).group(1)
        cases = re.findall(r"^\s*([a-z-]+),", re.sub(r"///.*", "", body), re.M)
        self.assertEqual(tuple(cases), CLASSES)

    def test_constructors_set_their_class(self):
        for cls in CLASSES:
            error = getattr(ToolError, cls)("m", {"k": 1})
            self.assertEqual((error.cls, error.message, error.details), (cls, "m", {"k": 1}))

    def test_unknown_class_is_refused(self):
        with self.assertRaises(ValueError):
            ToolError("oops", "m")

    def test_str_names_class_and_message(self):
        self.assertEqual(str(ToolError.permission("not granted")), "permission: not granted")


class Details(unittest.TestCase):
    def test_travel_as_compact_json_in_order(self):
        error = ToolError.validation("total", {"expected": 300, "got": 200})
        self.assertEqual(error.details_json, '{"expected":300,"got":200}')
        self.assertIsNone(ToolError.fatal("boom").details_json)

    def test_from_wire_parses_details_and_keeps_non_json_as_text(self):
        error = ToolError.from_wire("conflict", "key reused", '{"key":"k"}')
        self.assertEqual((error.cls, error.message, error.details), ("conflict", "key reused", {"key": "k"}))
        self.assertEqual(ToolError.from_wire("conflict", "m", "not json").details, "not json")
        self.assertIsNone(ToolError.from_wire("fatal", "m", None).details)

    def test_unserializable_details_fail_where_raised(self):
        with self.assertRaises(TypeError):
            ToolError.validation("m", {1, 2})


if __name__ == "__main__":
    unittest.main()
