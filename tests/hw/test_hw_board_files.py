"""Board files: the wiring of the Pi 4 and Pi 5 cameras, and the checks that guard it."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from openbwv.hw.board import REQUIRED_PINS, available_boards, detect_board, load_board, parse_board
from openbwv.hw.errors import BoardFileError

BOARDS = ["pi4", "pi5"]


def raw(name: str) -> dict:
    return tomllib.loads((Path(load_board(name).source)).read_text(encoding="utf-8"))


def test_the_shipped_boards_are_the_pi4_and_the_pi5():
    assert available_boards() == BOARDS


def test_board_files_are_package_data_found_through_importlib_resources():
    for name in BOARDS:
        assert resources.files("openbwv.hw").joinpath("boards", f"{name}.toml").is_file()


@pytest.mark.parametrize("name", BOARDS)
def test_board_files_have_no_pin_used_twice(name):
    board = load_board(name)
    pins = board.all_pins()
    assert len({p.bcm for p in pins}) == len(pins)
    assert len({p.header for p in pins}) == len(pins)


@pytest.mark.parametrize("name", BOARDS)
def test_board_files_name_every_device_a_camera_needs(name):
    board = load_board(name)
    assert set(board.pins) == set(REQUIRED_PINS)
    assert set(board.triggers) == {"holster", "taser", "vehicle_lights"}
    assert board.pins["buzzer"].pwm


@pytest.mark.parametrize("name", BOARDS)
def test_header_pin_numbers_match_the_bcm_numbers_on_that_pi(name):
    board = load_board(name)
    board_info = MockFactory(revision=board.mock_revision).board_info
    for spec in board.all_pins():
        [(header, info)] = list(board_info.find_pin(spec.gpio_name))
        assert (header.name, info.number) == ("J8", spec.header), spec.name


@pytest.mark.parametrize("name", BOARDS)
def test_the_emulated_revision_is_the_board_the_file_describes(name):
    board = load_board(name)
    model = MockFactory(revision=board.mock_revision).board_info.model
    assert model == {"pi4": "4B", "pi5": "5B"}[name]


@pytest.mark.parametrize("name", BOARDS)
def test_reserved_lines_are_kept_free(name):
    board = load_board(name)
    assert {0, 1, 2, 3, 14, 15} <= board.reserved
    assert not {p.bcm for p in board.all_pins()} & board.reserved


def test_the_pi5_uses_lgpio_because_rpi_gpio_cannot_drive_it():
    assert load_board("pi5").pin_factory == "lgpio"


def test_a_pin_used_twice_is_rejected_naming_both_devices():
    data = raw("pi5")
    data["pins"]["status_led"]["bcm"] = data["pins"]["record_led"]["bcm"]
    with pytest.raises(BoardFileError, match=r"BCM 17 is used twice: by record_led and by status_led"):
        parse_board(data)


def test_a_header_pin_used_twice_is_rejected():
    data = raw("pi5")
    data["triggers"]["taser"]["header"] = data["pins"]["button"]["header"]
    with pytest.raises(BoardFileError, match=r"header pin 16 is used twice"):
        parse_board(data)


def test_a_pulled_up_input_declared_active_high_is_rejected():
    data = raw("pi4")
    data["pins"]["button"]["active_high"] = True
    with pytest.raises(BoardFileError, match=r"pull 'up' with active_high = true"):
        parse_board(data)


def test_a_missing_pin_is_rejected_listing_what_every_camera_needs():
    data = raw("pi4")
    del data["pins"]["dock_detect"]
    with pytest.raises(BoardFileError, match=r"missing pin\(s\) dock_detect; every camera needs record_led"):
        parse_board(data)


def test_a_line_on_a_reserved_pin_is_rejected():
    data = raw("pi4")
    data["pins"]["status_led"]["bcm"] = 14
    with pytest.raises(BoardFileError, match=r"status_led is on BCM 14, which \[board\] reserved keeps free"):
        parse_board(data)


def test_a_misspelt_key_is_rejected_rather_than_ignored():
    data = copy.deepcopy(raw("pi4"))
    data["pins"]["button"]["pul"] = "up"
    with pytest.raises(BoardFileError, match=r"unknown key\(s\) \['pul'\]"):
        parse_board(data)


def test_an_unknown_board_name_lists_the_shipped_boards():
    with pytest.raises(BoardFileError, match=r"no board named 'pi3'; expected one of 'pi4', 'pi5'"):
        load_board("pi3")


def test_a_board_file_outside_the_package_can_be_loaded_by_path(tmp_path):
    text = Path(load_board("pi5").source).read_text(encoding="utf-8").replace('name = "pi5"', 'name = "custom"')
    path = tmp_path / "custom.toml"
    path.write_text(text, encoding="utf-8")
    assert load_board(path).name == "custom"


def test_a_board_file_that_is_not_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[board\n", encoding="utf-8")
    with pytest.raises(BoardFileError, match=r"broken.toml: not valid TOML"):
        load_board(path)


@pytest.mark.parametrize("model, board", [
    (b"Raspberry Pi 5 Model B Rev 1.0\0", "pi5"),
    (b"Raspberry Pi 4 Model B Rev 1.4\0", "pi4"),
])
def test_auto_board_reads_the_device_tree_model(tmp_path, model, board):
    path = tmp_path / "model"
    path.write_bytes(model)
    assert detect_board(path) == board


def test_auto_board_on_another_machine_says_what_to_set(tmp_path):
    path = tmp_path / "model"
    path.write_bytes(b"Raspberry Pi 3 Model B Plus Rev 1.3\0")
    with pytest.raises(BoardFileError, match=r"expected a Raspberry Pi 4 or 5"):
        detect_board(path)
    with pytest.raises(BoardFileError, match=r"set the board explicitly to one of 'pi4', 'pi5'"):
        detect_board(tmp_path / "absent")
