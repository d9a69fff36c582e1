"""The generated input tests catch a lost bound: loosen a type and the suite must fail."""

from pathlib import Path

from projects import break_module, run

ID = "Id = Annotated[int, Field(ge=1, lt=2**63), WholeNumber]"
PRICE = "NonNegativeInt4 = Annotated[int, Field(ge=0, lt=2**31), WholeNumber]"
# The input tests of the item routes, where a lost bound shows.
ITEM_INPUT_TESTS = ["pytest", "-q", "-p", "no:cacheprovider", "tests/example/test_item_inputs.py"]


def test_an_id_without_its_upper_bound_fails_the_suite(project: Path) -> None:
    break_module(project, ID, "Id = Annotated[int, Field(ge=1), WholeNumber]")
    result = run(ITEM_INPUT_TESTS, project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "FAILED tests/example/test_item_inputs.py::test_an_id_no_key_can_have_is_a_422_naming_it"
        "[GET item_id-2**63]" in result.stdout
    )


def test_an_id_parameter_without_bounds_fails_the_schema_check(project: Path) -> None:
    # A plain int, as tutorials write it: nothing in the schema says 2**63 is too large.
    break_module(project, "async def get_item(item_id: Id,", "async def get_item(item_id: int,")
    result = run(["pytest", "-q", "-p", "no:cacheprovider", "tests/kit/test_input.py"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "integers without bounds: ['GET /items/{item_id} path item_id']" in result.stdout


def test_the_fuzz_finds_a_bound_wider_than_the_column(project: Path) -> None:
    wide = "async def get_item(item_id: Annotated[int, Field(ge=1, lt=2**64)],"
    break_module(project, "async def get_item(item_id: Id,", wide)
    result = run(["pytest", "-q", "-p", "no:cacheprovider", "tests/kit/test_fuzz.py"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert "OverflowError: Python int too large to convert to SQLite INTEGER" in result.stdout
    assert "curl -X GET " in result.stdout
    assert "http://testserver/items/1844674407370955161" in result.stdout


def test_a_price_without_its_int4_bound_fails_the_suite(project: Path) -> None:
    break_module(project, PRICE, "NonNegativeInt4 = Annotated[int, Field(ge=0), WholeNumber]")
    result = run([*ITEM_INPUT_TESTS, "-k", "price"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "FAILED tests/example/test_item_inputs.py::test_a_price_an_int4_column_cannot_hold_is_a_422"
        "[create price_cents-2**31]" in result.stdout
    )


def test_accepting_true_as_an_integer_fails_the_suite(project: Path) -> None:
    break_module(project, ", WholeNumber]", "]", everywhere=True)
    result = run([*ITEM_INPUT_TESTS, "-k", "json_integer"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "FAILED tests/example/test_item_inputs.py::test_a_body_integer_must_be_a_json_integer"
        "[create owner_id-True]" in result.stdout
    )
