import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.learn.shape import MAX_SHAPE, shape


def test_example_from_the_brief() -> None:
    ctx = {"amount": 1250, "customer": {"email": "a@b.co"}, "items": [{"sku": "X-1"}]}
    assert shape(ctx) == "{amount:int,customer:{email:str},items:[{sku:str}]}"


def test_scalars_and_containers() -> None:
    assert shape(None) == "null"
    assert shape(True) == "bool"
    assert shape(3) == "int"
    assert shape(3.5) == "float"
    assert shape("x") == "str"
    assert shape(b"x") == "bytes"
    assert shape(object()) == "obj"
    assert shape([]) == "[]"
    assert shape({}) == "{}"
    assert shape([1, "a", None, 2]) == "[int|null|str]"
    assert shape((1, 2)) == "[int]"
    assert shape({1, 2}) == "[int]"


def test_independent_of_insertion_order() -> None:
    a = {"b": 1, "a": {"y": "s", "x": [1]}}
    b = {"a": {"x": [2], "y": "t"}, "b": 9}
    assert shape(a) == shape(b) == "{a:{x:[int],y:str},b:int}"


def test_keys_that_are_values_become_stars_and_merge() -> None:
    ctx = {
        "cus_9f8a7b6c5d": {"email": "x@y.z"},
        "john.doe@example.com": 1,
        "4111111111111111": "card",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6": None,
        "First Name": "Ann",
        "address_line1": "1 Main St",
        7: 1.5,
    }
    assert shape(ctx) == "{*:float|int|null|str|{email:str},address_line1:str}"


def test_bounded_depth_and_size() -> None:
    deep: object = 1
    for _ in range(50):
        deep = {"k": deep}
    out = shape(deep)
    assert out.count("{") == 8 and out.endswith("~" + "}" * 8)
    letters = "abcdefghijklmnopqrstuvwxyz"
    wide = {f"key_{a}{b}{c}": 1 for a in letters for b in letters for c in letters[:8]}
    out = shape(wide)
    assert len(out) <= MAX_SHAPE
    assert out.endswith("~")
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert shape(cyclic).startswith("[[")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_never_contains_a_value(value: object) -> None:
    out = shape(value)
    assert len(out) <= MAX_SHAPE

    # Every string value and every number is absent unless it is a type word or a kept key.
    def leaves(v: object) -> list[str]:
        if isinstance(v, dict):
            return [s for item in v.values() for s in leaves(item)]
        if isinstance(v, list):
            return [s for item in v for s in leaves(item)]
        if isinstance(v, bool) or v is None:
            return []
        return [v if isinstance(v, str) else json.dumps(v)]

    tokens = set(
        out.replace("{", " ")
        .replace("}", " ")
        .replace("[", " ")
        .replace("]", " ")
        .replace(",", " ")
        .replace(":", " ")
        .replace("|", " ")
        .split()
    )
    type_words = {"null", "bool", "int", "float", "str", "bytes", "obj", "~", "*"}
    for leaf in leaves(value):
        if any(ch.isdigit() for ch in leaf) and len(leaf) > 2:
            assert leaf not in out
    assert tokens <= type_words | _kept_keys(value)


def _kept_keys(v: object) -> set[str]:
    if isinstance(v, dict):
        return set(map(str, v)) | {k for item in v.values() for k in _kept_keys(item)}
    if isinstance(v, list):
        return {k for item in v for k in _kept_keys(item)}
    return set()
