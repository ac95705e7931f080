import pytest

from skypile.text.cleanup import CleanupConfig, classify_line, clean_text, units

CFG = CleanupConfig()


def test_units_count_words_and_cjk_characters():
    assert units("The lake was calm.") == 4
    assert units("湖水平静") == 4
    assert units("Python 3.11 文档") == 4
    # a CJK character ends a word; one inner apostrophe joins one; '_' splits
    assert units("don't中文 l'été-là x_y 1,000.5") == 8
    assert units("日本語のテキストと한국어") == 12


def test_title_repeats_are_found_once_measured():
    title = "A day at the lake - Example News"
    text = "\n".join(["A day at the lake", "Example News",
                      "We walked along the shore of the lake for most of the morning."])
    cleaned, removed = clean_text(text, title)
    assert cleaned == "We walked along the shore of the lake for most of the morning."
    assert removed == {"title": 1, "short": 1}


@pytest.mark.parametrize("line,rule", [
    ("Home | News | Sport | Weather | About us", "navigation"),
    ("首页 | 新闻 | 体育 | 财经 | 关于我们", "navigation"),
    ("当前位置：首页 > 新闻 > 正文", "navigation"),
    ("Home > World > Europe", "navigation"),
    ("Copyright © 2024 Example Media. All rights reserved.", "copyright"),
    ("版权所有 2004-2024 示例网 京ICP备12345678号", "copyright"),
    ("联系电话：010-12345678 邮箱：info@example.cn", "contact"),
    ("Contact us: press@example.com", "contact"),
    ("Share this article", "share"),
    ("Sign up for our newsletter", "share"),
    ("发表评论 | 关闭窗口", "share"),
    ("责任编辑：王小明", "share"),
    ("12 comments", "share"),
    ("A day at the lake", "title"),
    ("Related", "short"),
    ("阅读", "short"),
])
def test_rules_name_what_they_remove(line, rule):
    assert classify_line(line, "A day at the lake", CFG) == rule


@pytest.mark.parametrize("line", [
    "We walked along the shore of the lake for most of the morning.",
    "我们沿着湖边走了一个上午，湖水平静而清澈。",
    "Yes.",
    # long lines that mention a boilerplate word are content
    "The company said it would share more details about the copyright case with its "
    "subscribers next week, after the court publishes its ruling on the appeal.",
    "当前位置：首页>军事技术 飞行物理学常识 飞行归因于作用在飞机上的几个力。第一个是飞机的重量，"
    "即将飞机拉向地面的重力。第二个是引擎产生的推力，它通过空气推动飞机。",
])
def test_content_lines_are_kept(line):
    assert classify_line(line, "A day at the lake", CFG) is None


def test_layout_table_rows_are_unpacked_and_menus_dropped():
    text = "\n".join([
        "| 首页 | 新闻 | 体育 | 财经 |",
        "|---|---|",
        "| | 我们沿着湖边走了一个上午，湖水平静而清澈，可以看见湖底的石头。 | |",
        "| 版权所有 2024 示例网 |",
    ])
    cleaned, removed = clean_text(text, "")
    assert cleaned == "我们沿着湖边走了一个上午，湖水平静而清澈，可以看见湖底的石头。"
    assert removed == {"navigation": 1, "table-rule": 1, "copyright": 1}


def test_data_table_rows_are_kept():
    text = "| 1 | Kyle Busch | 5040 | 5 |\n| 2 | Martin Truex Jr. | 5035 | 7 |"
    cleaned, removed = clean_text(text, "")
    assert cleaned == text and removed == {}


def test_lines_without_a_separator_character_are_one_segment():
    """The shortcut before the navigation split: every separator the split knows holds a
    character of ``_NAV_MARK``, so a line without one splits into itself alone."""
    import random

    from skypile.text import cleanup

    separators = ["\\|", "|", "｜", "·", "•", "»", "«", "›", ">>", "->", "＞", ">", "/ ", " /",
                  "┊", "】【", "] [", "]["]
    for sep in separators:
        assert cleanup._NAV_SPLIT.search(f"a{sep}b") and cleanup._NAV_MARK.search(sep), sep
    rng = random.Random(3)
    alphabet = list("ab 中文-_.,:;!?()[]{}<+=~\t") + separators
    for _ in range(3000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        if not cleanup._NAV_MARK.search(line):
            assert len([s for s in cleanup._NAV_SPLIT.split(line) if s.strip()]) <= 1, line
