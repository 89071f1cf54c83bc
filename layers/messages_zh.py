"""Simplified Chinese for the service's refusals: every problem detail keeps its stable
English ``detail`` (clients and logs match on it) and gains ``title_zh``/``detail_zh``,
which the web map shows to its zh-CN users.

Why a catalogue over the English texts rather than a second text at every raise site:
the messages are composed where the fault is found (with the caller's values in them),
by some two hundred raise sites across the packages; one table here, matched against
the English, keeps the Chinese in one room. A raise site may still give its own
(``detail_zh=``). The sweeps over every route (tests/geo_api/test_sweep.py and
test_hostile_input.py, through tests/zh.py) fail when a refusal they provoke has no
Chinese of its own. What the table does not know still gets a Chinese sentence (by
status and field), never English prose.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

#: The titles of the problem statuses.
TITLES = {
    400: "请求有误",
    401: "未登录或登录已失效",
    403: "无权操作",
    404: "未找到",
    405: "不支持此请求方法",
    406: "无法提供所要求的格式",
    409: "操作冲突",
    410: "已失效",
    413: "请求内容过大",
    415: "不支持的内容类型",
    422: "输入有误",
    423: "账号已锁定",
    428: "缺少前提条件",
    429: "请求过于频繁",
    500: "服务内部错误",
    503: "服务暂不可用",
}

#: Field names (as the API names them) in Chinese.
FIELDS = {
    "lon": "经度",
    "lat": "纬度",
    "long": "经度",
    "x": "横坐标",
    "y": "纵坐标",
    "z": "缩放级别",
    "crs": "坐标系",
    "bbox": "范围",
    "point": "位置",
    "points": "位置",
    "member_id": "党员编号",
    "number": "党员编号",
    "name": "姓名",
    "phone": "手机号码",
    "role": "角色",
    "status": "状态",
    "reason": "原因",
    "note": "备注",
    "move": "迁移",
    "grid": "网格",
    "grids": "网格",
    "code": "编码",
    "area_code": "区域编码",
    "community": "社区",
    "street": "街道",
    "within": "范围",
    "level": "层级",
    "kind": "类型",
    "branch": "党支部",
    "site": "活动阵地",
    "secretary": "书记",
    "secretary_name": "书记姓名",
    "secretary_phone": "书记电话",
    "username": "用户名",
    "password": "密码",
    "token": "令牌",
    "category": "事件类别",
    "description": "描述",
    "photos": "照片",
    "photo": "照片",
    "contact": "联系方式",
    "channel": "渠道",
    "department": "职能部门",
    "assignee": "处置人",
    "action": "操作",
    "version": "版本",
    "duplicate_of": "原事件",
    "id": "编号",
    "ids": "编号",
    "from": "开始日期",
    "to": "结束日期",
    "day": "日期",
    "working": "工作日",
    "layers": "图层",
    "layer": "图层",
    "res": "分辨率",
    "metric": "指标",
    "q": "搜索词",
    "limit": "每页条数",
    "offset": "偏移",
    "file": "文件",
    "map": "列对应",
    "encoding": "编码格式",
    "sheet": "工作表",
    "body": "请求内容",
    "Idempotency-Key": "幂等键",
    "radius": "半径",
    "service_code": "服务类别",
    "service_request_id": "诉求编号",
    "jurisdiction_id": "辖区",
    "address_string": "地址",
    "email": "邮箱",
    "first_name": "名",
    "last_name": "姓",
    "start_date": "开始时间",
    "end_date": "结束时间",
    "period": "期间",
    "at": "日期",
    "effective": "生效日期",
    "activation_code": "激活码",
    "new_password": "新密码",
    "old_password": "原密码",
    "department_id": "职能部门",
}

WHAT = {
    "event": "事件",
    "registration": "报到记录",
    "member": "党员",
    "branch": "党支部",
    "grid": "网格",
    "current grid": "现行网格",
    "area": "区域",
    "account": "账号",
    "category": "事件类别",
    "department": "职能部门",
    "service": "服务类别",
    "service request": "诉求",
    "street": "街道",
    "community": "社区",
    "district": "区县",
    "import": "导入",
    "level": "层级",
    "layer": "图层",
    "role": "角色",
    "status": "状态",
    "metric": "指标",
    "kind": "类型",
    "channel": "渠道",
    "action": "操作",
    "service role": "服务岗位",
    "jurisdiction_id": "辖区",
}


def field_zh(field: str | None) -> str:
    if not field:
        return ""
    if field in FIELDS:
        return FIELDS[field]
    head, _, rest = field.partition(".")
    if head in FIELDS:
        return FIELDS[head] + (f"（{rest}）" if rest else "")
    return f"字段 {field}"


def _what(word: str) -> str:
    return WHAT.get(word, word)


_Template = str | Callable[[Mapping[str, str]], str]

_STATUS = {
    "pending": "待确认",
    "confirmed": "已确认",
    "rejected": "已退回",
    "reported": "已上报",
    "registered": "已受理",
    "dispatched": "已派遣",
    "in_progress": "处置中",
    "handled": "已处置",
    "closed": "已结案",
    "returned": "已退回",
    "deferred": "暂缓",
    "duplicate": "重复",
    "cancelled": "已撤销",
    "ended": "已结束",
}
_ROLE = {
    "admin": "管理员",
    "dispatcher": "指挥中心调度员",
    "grid_worker": "网格员",
    "member": "党员",
    "department_staff": "职能部门工作人员",
    "anonymous": "匿名用户",
    "public": "公众",
}
_ACTION = {
    "register": "受理",
    "dispatch": "派遣",
    "start": "开始处置",
    "handle": "处置",
    "close": "结案",
    "reject": "不予受理",
    "return": "退回",
    "defer": "暂缓",
    "resume": "恢复",
    "reopen": "重新办理",
    "mark_duplicate": "标记重复",
    "cancel": "撤销",
}
_LEVEL = {"district": "区县", "street": "街道", "community": "社区", "grid": "网格", "department": "职能部门"}


#: (English pattern, Chinese), tried in order; the groups fill the Chinese template.
_ENTRIES: list[tuple[str, _Template]] = [
    # a message written in Chinese with its English in brackets (the password policy)
    (r"^(?P<zh>[\u3000-\u9fff][^(]*?) \([^)]*\)$", "{zh}"),
    # ---- coordinates, locate, registration -------------------------------------------
    (
        r"^(?P<f>lon|lat|x|y|longitude|latitude) out of range \[-?(?P<lo>[\d.]+), (?P<hi>[\d.]+)\]: (?P<v>\S+)",
        lambda g: f"{field_zh(g['f'][:3])}超出范围（±{g['hi']}）：{g['v']}",
    ),
    (
        r"^no grid within (?P<m>[\d.]+) m; the nearest grid is (?P<code>\d+) (?P<name>.+?), (?P<d>[\d,]+) m away",
        lambda g: f"该位置 {g['m']} 米内没有网格；最近的网格是 {g['code']} {g['name']}，相距 {g['d']} 米",
    ),
    (
        r"^the (?P<what>event|residence|point|site) is outside the service area",
        lambda g: f"该位置不在服务范围内（{ {'event': '事件', 'residence': '住址'}.get(g['what'], '位置') }）",
    ),
    (r"^\((?P<a>[^,]+), (?P<b>[^)]+)\) is not a valid latitude, longitude", "({a}, {b}) 不是有效的纬度、经度"),
    (r"^lat and long must be numbers", "纬度和经度必须是数字（WGS84 度）"),
    (r"^lat and long are required", "缺少纬度和经度：诉求按坐标定位"),
    (
        r"^unknown crs|^unknown CRS|^unknown coordinate",
        "不认识的坐标系（可用：wgs84、gcj02、bd09、cgcs2000 或 EPSG 编号）",
    ),
    (r"^(?P<f>\w+) must be a finite number", lambda g: f"{field_zh(g['f'])}必须是有限的数字"),
    (r"^(?P<f>\w+) is not a number", lambda g: f"{field_zh(g['f'])}不是数字"),
    (r"^(?P<f>\w+) is missing", lambda g: f"缺少{field_zh(g['f'])}"),
    (r"^(?P<f>\w+) is (?:infinite|not finite|NaN)", lambda g: f"{field_zh(g['f'])}必须是有限的数字"),
    (
        r"^(?:contains|has) (?:a NUL character|a lone surrogate|a bidirectional control character|an invisible format character|a noncharacter|a control character)",
        lambda g: f"{g['_field'] or '输入'}含有不允许的字符",
    ),
    (r"^(?P<f>\w+) is required", lambda g: f"须填写{field_zh(g['f'])}"),
    (r"^crs must be a string", "坐标系须是文本（如 wgs84、gcj02）"),
    (r"does not convert to a valid WGS84 point", "该坐标换算不出有效的 WGS84 位置：请检查坐标系和经纬度顺序"),
    (r"^row (?P<i>\d+) must be an object with", "第 {i} 行须是含编号、经度、纬度的对象"),
    (
        r"^(?P<f>\w+) needs 4 comma-separated numbers",
        lambda g: f"{field_zh(g['f'])}需要 4 个以逗号分隔的数字：最小经度,最小纬度,最大经度,最大纬度",
    ),
    (r"^(?P<f>\w+) must contain only numbers", lambda g: f"{field_zh(g['f'])}只能包含数字"),
    (r"^(?P<f>\w+) must contain finite numbers", lambda g: f"{field_zh(g['f'])}必须是有限的数字"),
    (
        r"^(?P<f>\w+) minimum exceeds maximum",
        lambda g: f"{field_zh(g['f'])}的最小值大于最大值（顺序为 最小经度,最小纬度,最大经度,最大纬度）",
    ),
    (r"^(?P<f>\w+) longitudes must be within", lambda g: f"{field_zh(g['f'])}的经度必须在 ±180 之内"),
    (r"^(?P<f>\w+) latitudes must be within", lambda g: f"{field_zh(g['f'])}的纬度必须在 ±90 之内"),
    (r"^(?P<f>\w+) must be a W3C/ISO 8601 date-time", lambda g: f"{field_zh(g['f'])}必须是 ISO 8601 日期时间"),
    (r"^member_id is required when an admin registers", "管理员代为报到时须填写党员编号"),
    (r"^member (?P<id>\S+) registered concurrently", "党员 {id} 同时有另一次报到，请重试"),
    (r"^member (?P<id>\S+) has no confirmed registration", "党员 {id} 没有已确认的报到"),
    (
        r"^member (?P<id>\S+) already has an active registration \((?P<r>\d+), (?P<s>\w+)\)",
        lambda g: (
            f"党员 {g['id']} 已有{_STATUS.get(g['s'], g['s'])}的报到（{g['r']}）；如已搬家，请勾选“已搬家”后重新提交"
        ),
    ),
    (r"^member (?P<id>\S+) has an account already", "党员 {id} 已有账号"),
    (
        r"^member (?P<id>\S+) already holds (?P<n>\d+) open tasks \(at most (?P<m>\d+)\)",
        "党员 {id} 已有 {n} 项未完成任务（最多 {m} 项）",
    ),
    (
        r"^registration (?P<id>\S+) is (?P<s>\w+), only a pending one can be decided",
        lambda g: f"报到记录 {g['id']} 的状态是 {_STATUS.get(g['s'], g['s'])}，只有待确认的才能审核",
    ),
    (
        r"^registration (?P<id>\S+) is in grid (?P<g>\S+), outside your area",
        "报到记录 {id} 属于网格 {g}，不在您的管辖范围内",
    ),
    (r"^registration (?P<id>\S+) is not yours to see", "报到记录 {id} 不是您的，无权查看"),
    (r"^a rejection needs a reason", "退回须说明原因"),
    (r"^a member acts only for themselves", "党员只能为本人操作"),
    (r"^this account is not linked to a member", "此账号未关联党员"),
    # ---- not found ------------------------------------------------------------------------
    (
        r"^no (?P<what>event|registration|member|branch|grid|current grid|area|category|department|service request|service|account|import|street|community|district) (?:with (?:id|code) )?(?P<id>.+?)(?P<own> in your area)?$",
        lambda g: f"没有{'您管辖范围内的' if g.get('own') else ''}{_what(g['what'])} {g['id'].strip(chr(39))}",
    ),
    (r"^no (?P<what>\w+) with code (?P<id>\S+)", lambda g: f"没有编码为 {g['id']} 的{_what(g['what'])}"),
    (
        r"^unknown (?P<what>level|metric|kind|status|channel|action|service role|category|department|layer|jurisdiction_id) (?P<v>'[^']*'|\S+)",
        lambda g: f"不认识的{_what(g['what'])} {g['v']}",
    ),
    (
        r"^unknown (?P<f>\w+) (?P<code>\S+): no such area or current grid",
        lambda g: f"{field_zh(g['f'])} {g['code']} 不存在：没有这个区域或现行网格",
    ),
    (r"^zoom (?P<z>-?\d+) is outside", "缩放级别 {z} 超出范围"),
    (r"^(?P<a>[xy]) (?P<v>\d+) is outside the zoom (?P<z>\d+) grid", "瓦片坐标 {a}={v} 超出缩放级别 {z} 的范围"),
    (r"^layer '(?P<n>[^']+)' is served only to signed-in", "图层 {n} 仅向已登录的管理员提供"),
    # ---- areas, codes, scope ----------------------------------------------------------------
    (
        r"^(?P<f>\w+) must be a 12-digit area code or a 15-digit grid code",
        lambda g: f"{field_zh(g['f'])}必须是 12 位区域编码或 15 位网格编码",
    ),
    (r"^(?P<code>\S+) is outside your area", "{code} 不在您的管辖范围内"),
    (
        r"^(?P<what>grid|branch|event) (?P<code>\S+)(?: \(grid (?P<g>\S+)\))? is outside your area",
        lambda g: f"{_what(g['what'])} {g['code']} 不在您的管辖范围内",
    ),
    (
        r"^(?P<what>event|registration) (?P<id>\S+) is not yours to see",
        lambda g: f"{_what(g['what'])} {g['id']} 无权查看",
    ),
    (r"^role '(?P<r>[^']+)' may not call this endpoint", lambda g: f"角色 {_ROLE.get(g['r'], g['r'])} 无权使用此功能"),
    (r"^this endpoint needs a signed-in account", "此功能需要先登录"),
    (r"^level (?P<l>\w+) is above", lambda g: f"层级 {_LEVEL.get(g['l'], g['l'])} 高于所选范围"),
    (r"^(?P<c>\S+) is not a street", "{c} 不是街道（镇）"),
    (r"^community must be the code of a community", "社区必须填写社区编码"),
    (r"^grid (?P<g>\S+) is not in community (?P<c>\S+)", "网格 {g} 不属于社区 {c}"),
    (r"^code is required: there is more than one district", "须填写区县编码：系统中不止一个区县"),
    (r"^an account without an area must name (?P<f>\w+)", lambda g: f"没有辖区的账号须指定{field_zh(g['f'])}"),
    (r"^only district-level admins see work-unit branch rosters", "只有区级管理员可查看单位党支部名册"),
    # ---- branches --------------------------------------------------------------------------
    (r"^a (?P<k>\w+) branch covers at least one grid", "网格党支部至少覆盖一个网格"),
    (r"^a grid is listed twice", "同一网格列出了两次"),
    (r"^grid (?P<g>\S+) already has the active grid branch (?P<b>\S+)", "网格 {g} 已有在用的网格党支部 {b}，请先撤销"),
    (r"^branch (?P<b>\S+) is a (?P<k>\w+) branch, kept by the district", "党支部 {b} 由区级维护，不能在此修改"),
    (r"^the site \((?P<xy>[^)]+)\) lies outside community (?P<c>\S+)", "活动阵地（{xy}）不在社区 {c} 内"),
    (r"^(?P<f>\w+)_phone is required with a name", "填写姓名时须填写电话"),
    (r"^(?P<f>\w+)_name is required with a phone", "填写电话时须填写姓名"),
    # ---- events ------------------------------------------------------------------------------
    (r"^unknown category '(?P<c>[^']*)'", "不认识的事件类别 {c}"),
    (r"^the description is empty", "描述不能为空"),
    (r"^the description has (?P<n>\d+) characters; at most (?P<m>\d+)", "描述有 {n} 个字，最多 {m} 个"),
    (r"^(?P<n>\d+) photos; at most (?P<m>\d+)", "照片 {n} 张，最多 {m} 张"),
    (r"^photo (?P<k>\d+) must be an http\(s\) URL", "第 {k} 张照片必须是 http(s) 网址"),
    (r"^photo (?P<k>\d+) ", "第 {k} 张照片含有不允许的字符"),
    (r"^anonymous reports come through the public channel", "匿名上报只能通过公众渠道"),
    (
        r"^a (?P<r>\w+) may not report through the '(?P<c>[^']*)' channel",
        lambda g: f"{_ROLE.get(g['r'], g['r'])}不能通过 {g['c']} 渠道上报",
    ),
    (
        r"^a (?P<r>\w+) may not (?P<a>\w+) an event that is (?P<s>\w+)",
        lambda g: (
            f"{_ROLE.get(g['r'], g['r'])}不能对{_STATUS.get(g['s'], g['s'])}的事件执行{_ACTION.get(g['a'], g['a'])}"
        ),
    ),
    (
        r"^a (?P<r>\w+) may not (?P<a>\w+) events",
        lambda g: f"{_ROLE.get(g['r'], g['r'])}不能{_ACTION.get(g['a'], g['a'])}事件",
    ),
    (r"^(?P<a>\w+) needs a reason", lambda g: f"{_ACTION.get(g['a'], g['a'])}须说明原因"),
    (r"^mark_duplicate needs duplicate_of", "标记重复须填写原事件编号"),
    (r"^an event cannot duplicate itself", "事件不能与自身重复"),
    (r"^event (?P<o>\S+) was reported later than this one", "事件 {o} 的上报时间晚于本事件"),
    (
        r"^event (?P<o>\S+) is itself (?P<s>\w+); link the original",
        lambda g: f"事件 {g['o']} 本身是{_STATUS.get(g['s'], g['s'])}事件，请关联原始事件",
    ),
    (r"^event (?P<id>\S+) was changed by someone else meanwhile", "事件 {id} 已被他人修改，请刷新后重试"),
    (
        r"^event (?P<id>\S+) is at version (?P<v>\d+), not (?P<w>\d+)",
        "事件 {id} 已更新到第 {v} 版（您看到的是第 {w} 版），请刷新后重试",
    ),
    (r"^the grid layer is changing: try again", "网格数据正在更新，请重试"),
    (r"^the working calendar is kept by", "工作日历由指挥中心或区级管理员维护"),
    (r"^to is before from|^the period ends before it starts", "结束日期早于开始日期"),
    (r"^at most (?P<m>\d+) rows per batch", "每批最多 {m} 行"),
    # ---- accounts, sign-in -----------------------------------------------------------------
    (r"^wrong username or password", "用户名或密码错误"),
    (r"^invalid token", "登录令牌无效，请重新登录"),
    (r"^token expired", "登录已过期，请重新登录"),
    (r"^token issued in the future", "登录令牌的签发时间有误，请重新登录"),
    (r"^unknown or disabled account", "账号不存在或已停用"),
    (r"^username '(?P<u>[^']*)' is taken", "用户名 {u} 已被使用"),
    (r"^username: ", "用户名须为 3–64 个字母、数字或 . _ -，以字母或数字开头"),
    (r"^a (?P<r>\w+) account needs (?P<f>\w+)", lambda g: f"{_ROLE.get(g['r'], g['r'])}账号须填写{field_zh(g['f'])}"),
    (
        r"^a (?P<r>\w+) account takes no (?P<f>\w+)",
        lambda g: f"{_ROLE.get(g['r'], g['r'])}账号不需要{field_zh(g['f'])}",
    ),
    (r"^a (?P<r>\w+) account is bound to a", lambda g: f"{_ROLE.get(g['r'], g['r'])}账号所绑定的区域层级不对"),
    (r"^a (?P<k>\w+) may not manage (?P<t>\w+) accounts", "您无权管理这一类账号"),
    (
        r"^area_code must be a 12-digit area code or a 15-digit grid code",
        "区域编码必须是 12 位区域编码或 15 位网格编码",
    ),
    # ---- requests, bodies, files -----------------------------------------------------------
    (r"^the body is not valid JSON", "请求内容不是有效的 JSON"),
    (r"^the body must be a JSON object", "请求内容必须是 JSON 对象"),
    (r"^the body must be a JSON list", "请求内容必须是由 {{id, lon, lat[, crs]}} 对象组成的 JSON 列表"),
    (r"^the request body is empty", "请求内容为空：请发送 JSON 列表或含 id,lon,lat 列的 CSV"),
    (r"^upload the CSV as the request body", "请以 Content-Type text/csv 上传 CSV 作为请求内容"),
    (r"^the file is not (?P<e>[\w-]+) text", "文件不是 {e} 编码的文本：请另存为 UTF-8 编码的 CSV，或指明编码"),
    (r"^unknown encoding", "不认识的编码格式"),
    (r"^the (?:request )?body (?:of|is) (?:more than|larger than|over) ", "请求内容过大"),
    (r"^request body too large|^the request body is larger", "请求内容过大"),
    (
        r"^the request body exceeds (?P<n>\d+) bytes",
        lambda g: (
            f"请求内容超过上限（{int(g['n']) / 2**20:g} MB）"
            if int(g["n"]) >= 2**20
            else f"请求内容超过上限（{g['n']} 字节）"
        ),
    ),
    (r"^the Idempotency-Key '(?P<k>[^']*)' was used for another request", "幂等键 {k} 已用于另一个请求"),
    (r"^the Idempotency-Key '(?P<k>[^']*)' keeps changing hands", "幂等键 {k} 正被并发使用，请重新发送"),
    (
        r"^the Idempotency-Key '(?P<k>[^']*)' belongs to a request that gave no answer",
        "幂等键 {k} 对应的请求没有结果，请换一个新键",
    ),
    (r"^q must name a place", "搜索词须是街道、社区或网格名称的一部分，或编码"),
    (r"^q is longer than (?P<n>\d+) characters", "搜索词超过 {n} 个字"),
    (r"^res must be an H3 resolution from (?P<a>\d+) to (?P<b>\d+)", "分辨率须在 {a} 到 {b} 之间"),
    (r"^layers must be layer names separated by commas", "图层须是以逗号分隔的图层名"),
    (r"^a layer is named twice", "同一图层列出了两次"),
    (r"^status must be open or closed", "状态须为 open 或 closed"),
    (r"^service_code is required", "须填写服务类别"),
    (r"^service_request_id must be comma-separated numbers", "诉求编号须为以逗号分隔的数字"),
    (r"^role must be one of", "角色不在可选范围内"),
    (r"^kind must be one of", "类型不在可选范围内"),
    (
        r"^(?:the )?(?P<f>[\w.-]+):? (?:contains|has) (?:a NUL character|a lone surrogate|a bidirectional control character|an invisible format character|a noncharacter|a control character)",
        lambda g: f"{field_zh(g['f'])}含有不允许的字符",
    ),
    (
        r"^(?P<f>[\w.-]+) has (?P<n>\d+) characters; at most (?P<m>\d+)",
        lambda g: f"{field_zh(g['f'])}有 {g['n']} 个字，最多 {g['m']} 个",
    ),
    (r"^the database is unavailable", "数据库暂不可用（正在重启或维护），请稍后重试"),
    (r"^too many ", "请求过于频繁，请稍后再试"),
    (r"^Not Found$", "没有这个地址"),
    (r"^There was an error parsing the body", "请求内容无法解析"),
    (r"^Missing boundary in multipart", "multipart 请求缺少分隔符（boundary）"),
    (r"^Method Not Allowed$", "不支持此请求方法"),
    (r"^Not authenticated$", "请先登录"),
    # ---- activation, sessions, audit -------------------------------------------------------
    (r"^give within or member_ids, not both", "辖区与党员编号列表只能二选一"),
    (r"^codes are issued for one community \(or grid\) at a time", "激活码每次只为一个社区（或网格）发放"),
    (r"^more than (?P<n>\d+) members at once", "一次最多为 {n} 名党员发放激活码"),
    (r"^member number, phone or activation code is wrong", "党员编号、手机号码或激活码有误"),
    (r"^no session cookie", "登录已失效，请重新登录"),
    (r"^the session is over", "登录已结束，请重新登录"),
    (r"^token revoked", "登录已失效（已退出、改过密码或账号有变动），请重新登录"),
    (r"^the current password is wrong", "原密码错误"),
    (r"^must differ from the current one", "新密码不能与原密码相同"),
    (r"^a member's reset is a new activation code", "党员账号的重置是发放新的激活码，不需填写密码"),
    (r"^not a username", "这不是有效的用户名"),
    (r"^the member number cannot be a username", "党员编号不能用作用户名"),
    (r"^this member's account is disabled", "该党员的账号已停用"),
    (r"^the audit of personal data is the district admins' to read", "个人信息访问记录仅区级管理员可查看"),
    (
        r"^(?P<f>\w+) must be a day \(2027-01-01\) or an instant",
        lambda g: f"{field_zh(g['f'])}须为日期（如 2027-01-01）或带时区的时刻",
    ),
    (r"^(?P<f>\w+) must lie in the years 2000–2100", lambda g: f"{field_zh(g['f'])}须在 2000–2100 年之间"),
    (r"^say the offset of", "请写明时区（如 +08:00）"),
    (r"^(?P<f>\w+) must be a day", lambda g: f"{field_zh(g['f'])}须为日期（如 2027-01-01）"),
]
_CATALOGUE = [(re.compile(p), t) for p, t in _ENTRIES]

#: pydantic's error types → Chinese (``{ctx}`` values filled in).
_PYDANTIC = {
    "missing": "缺少{field}",
    "float_parsing": "{field}必须是数字",
    "float_type": "{field}必须是数字",
    "finite_number": "{field}必须是有限的数字",
    "int_parsing": "{field}必须是整数",
    "int_type": "{field}必须是整数",
    "int_from_float": "{field}必须是整数",
    "bool_parsing": "{field}必须是 true 或 false",
    "bool_type": "{field}必须是 true 或 false",
    "string_type": "{field}必须是文本",
    "string_too_short": "{field}太短（至少 {min_length} 个字符）",
    "string_too_long": "{field}太长（最多 {max_length} 个字符）",
    "string_pattern_mismatch": "{field}的格式不对",
    "too_short": "{field}太少（至少 {min_length} 项）",
    "too_long": "{field}太多（最多 {max_length} 项）",
    "greater_than": "{field}必须大于 {gt}",
    "greater_than_equal": "{field}不能小于 {ge}",
    "less_than": "{field}必须小于 {lt}",
    "less_than_equal": "{field}不能大于 {le}",
    "literal_error": "{field}必须是以下之一：{expected}",
    "enum": "{field}必须是以下之一：{expected}",
    "json_invalid": "请求内容不是有效的 JSON",
    "json_type": "请求内容必须是 JSON",
    "model_type": "{field}必须是 JSON 对象",
    "model_attributes_type": "{field}必须是 JSON 对象",
    "dict_type": "{field}必须是 JSON 对象",
    "list_type": "{field}必须是列表",
    "extra_forbidden": "不认识的字段 {raw_field}",
    "date_parsing": "{field}必须是日期（YYYY-MM-DD）",
    "date_from_datetime_parsing": "{field}必须是日期（YYYY-MM-DD）",
    "datetime_parsing": "{field}必须是 ISO 8601 日期时间",
    "datetime_from_date_parsing": "{field}必须是 ISO 8601 日期时间",
    "date_type": "{field}必须是日期",
    "datetime_type": "{field}必须是日期时间",
    "url_parsing": "{field}必须是网址",
    "url_scheme": "{field}必须是 http(s) 网址",
    "value_error": "{field}的值不对",
    "assertion_error": "{field}的值不对",
    "union_tag_invalid": "{field}的类型不对",
}


def title_zh(status: int) -> str:
    return TITLES.get(status, "请求有误" if 400 <= status < 500 else "服务错误")


def detail_zh(detail: str, *, status: int, field: str | None = None) -> str:
    """The Chinese for a problem's English ``detail``: from the catalogue, or a sentence
    built from the status and the field."""
    text_ = detail.strip()
    if field and text_.startswith(f"{field}: "):  # "lat: Input should be …" (validation)
        text_ = text_[len(field) + 2 :]
    for pattern, template in _CATALOGUE:
        m = pattern.search(text_)
        if m:
            groups = {k: (v or "") for k, v in m.groupdict().items()}
            groups["_field"] = field_zh(field)
            return template(groups) if callable(template) else template.format(**groups)
    return fallback_zh(status, field)


def known(detail: str, field: str | None = None) -> bool:
    """Whether the catalogue has the Chinese of ``detail`` (tests: every refusal has)."""
    text_ = detail.strip()
    if field and text_.startswith(f"{field}: "):
        text_ = text_[len(field) + 2 :]
    return any(p.search(text_) for p, _ in _CATALOGUE)


def fallback_zh(status: int, field: str | None) -> str:
    where = field_zh(field)
    if status == 422 or status == 400:
        return f"{where}的值无法使用" if where else "请求的内容无法使用"
    if status == 404:
        return f"没有找到所要的{where}" if where else "没有找到所要的内容"
    if status == 403:
        return "您的账号无权进行此操作"
    if status == 401:
        return "请先登录"
    if status == 409:
        return "数据已被修改或与现有数据冲突，请刷新后重试"
    if status == 429:
        return "请求过于频繁，请稍后再试"
    if status == 503:
        return "服务暂不可用，请稍后重试"
    return title_zh(status)


def validation_zh(error: Mapping[str, Any], field: str) -> str:
    """One pydantic validation error in Chinese."""
    template = _PYDANTIC.get(str(error.get("type")))
    if template is None:
        return fallback_zh(422, field)
    ctx = {k: _ctx_text(v) for k, v in (error.get("ctx") or {}).items()}
    values = {"field": field_zh(field) or "请求内容", "raw_field": field, **ctx}
    try:
        return template.format_map(_Missing(values))
    except (IndexError, ValueError):
        return fallback_zh(422, field)


def _ctx_text(value: Any) -> str:
    return str(value).replace("'", "")


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return ""


# ---- the reasons an import gives per row or feature -------------------------------------------

#: "key (列名)": how the importers name a column in a row's reason; the Chinese shows
#: the column as the file heads it.
_LABEL = r"(?P<label>[\w.]+(?: \((?P<col>[^)]+)\))?)"
_AT = r"at (?P<lon>-?[\d.]+), (?P<lat>-?[\d.]+)"

#: GEOS's reasons for an invalid geometry (shapely.is_valid_reason), without the point.
_GEOS = {
    "Self-intersection": "自相交",
    "Ring Self-intersection": "环自相交",
    "Too few points in geometry component": "几何部件的点数过少",
    "Hole lies outside shell": "内环在外环之外",
    "Nested holes": "内环嵌套",
    "Interior is disconnected": "内部不连通",
    "Nested shells": "外环嵌套",
    "Duplicate Rings": "环重复",
    "Invalid Coordinate": "坐标无效",
    "Ring is not closed": "环未闭合",
}

#: The mistakes a CRS guess names, and its advice (ingest/boundaries.py's readings).
_READINGS: list[tuple[str, _Template]] = [
    (r"^the axes are swapped \(y first\)$", "坐标轴顺序颠倒（y 在前）"),
    (
        r"^GCJ-02 \(Amap, Tencent, WeChat\) coordinates declared as (?P<s>.+)$",
        "坐标为 GCJ-02（高德、腾讯、微信）却声明为 {s}",
    ),
    (r"^BD-09 \(Baidu\) coordinates declared as (?P<s>.+)$", "坐标为 BD-09（百度）却声明为 {s}"),
    (r"^(?P<a>WGS84|GCJ-02|BD-09) coordinates declared as (?P<s>.+)$", "坐标为 {a} 却声明为 {s}"),
    (r"^longitude/latitude declared as (?P<s>.+)$", "坐标为经纬度却声明为 {s}"),
    (r"^swap the columns, or export x \(longitude/easting\) first$", "请交换两列，或导出时 x（经度/东坐标）在前"),
    (
        r"^give (?P<crs>--crs \w+)(?P<or> \(or \w+\))?$",
        lambda g: f"请改用 {g['crs']}" + (f"（或 {g['or'][5:-1]}）" if g["or"] else ""),
    ),
]


def _geos_zh(reason: str) -> str:
    m = re.match(r"^(?P<what>[A-Za-z -]+?)(?P<at>\[[^\]]*\])?$", reason)
    if m and m["what"] in _GEOS:
        return _GEOS[m["what"]] + (m["at"] or "")
    return reason


def _reading_zh(text_: str) -> str:
    for pattern, template in _READINGS:
        m = re.match(pattern, text_)
        if m:
            g = {k: (v or "") for k, v in m.groupdict().items()}
            return template(g) if callable(template) else template.format(**g)
    return text_


def _crs_guess(g: Mapping[str, str]) -> str:
    return (
        f"按 {g['spec']} 读取时，{g['p']} 的要素面积在{g['d']}以外；"
        f"若{_reading_zh(g['what'])}，则只有 {g['q']}：{_reading_zh(g['advice'])}"
    )


def _sibling_gap(g: Mapping[str, str]) -> str:
    bordered = f"，与 {g['b']} 相邻" if g["b"] else ""
    kind = "碎缝" if g["kind"] == "a sliver" else "空隙"
    return (
        f"{g['code']} 内有 {g['m']} 平方米的{kind}不属于任何{_LEVEL.get(g['lv'], g['lv'])}，"
        f"位于 {g['lon']}, {g['lat']}{bordered}"
    )


def _parent_level(g: Mapping[str, str]) -> str:
    lv = {k: _LEVEL.get(g[k], g[k]) for k in ("is", "mine", "want")}
    return f"上级 {g['p']} 是{lv['is']}，{lv['mine']}的上级应为{lv['want']}"


_ROW_ENTRIES: list[tuple[str, _Template]] = [
    # rosters, branches, departments, categories, registrations (ingest/roster.py, tables.py)
    (r"^name is missing$", "名称为空"),
    (rf"^{_LABEL} is missing(?: \(a (?P<kind>\w+) branch belongs to a community\))?$", "{c}为空"),
    (rf"^{_LABEL} (?P<v>.+) appears again \(first on row (?P<n>\d+)\)$", "{c} {v} 重复（第 {n} 行已有）"),
    (
        rf"^{_LABEL} (?P<v>.+): (?P<n>\d+) (?P<what>\w+)s have that name; give its code$",
        "{c} {v}：有 {n} 个同名{what}，请填写编码",
    ),
    (
        rf"^{_LABEL}: unknown (?P<what>[\w ]+?) (?P<v>'.*') \(no .* has that code or name\)$",
        "{c}：没有编码或名称为 {v} 的{what}",
    ),
    (rf"^{_LABEL}: unknown service role (?P<v>.+)$", "{c}：没有服务岗位 {v}"),
    (r"^unknown service role (?P<v>.+)$", "没有服务岗位 {v}"),
    (r"^one of: (?P<v>.+)$", "可选：{v}"),
    (
        rf"^{_LABEL} must be a mobile number \(11 digits.*, got (?P<v>.+)$",
        "{c}须为 11 位手机号（1[3-9] 开头）或带区号的固定电话（0371-12345678），现为 {v}",
    ),
    (rf"^{_LABEL} is not a number: (?P<v>.+)$", "{c}不是数字：{v}"),
    (
        rf"^{_LABEL} must be more than (?P<lo>\S+) and at most (?P<hi>\S+), got (?P<v>.+)$",
        "{c}须大于 {lo} 且不超过 {hi}，现为 {v}",
    ),
    (rf"^{_LABEL} must be 是 or 否 \(yes/no\), got (?P<v>.+)$", "{c}须为“是”或“否”，现为 {v}"),
    (rf"^{_LABEL} must be one of .*, got (?P<v>.+)$", "{c}的值 {v} 不在可选范围内"),
    (rf"^{_LABEL} must be 1–32 letters, digits or", "{c}须为 1–32 位字母、数字或 . _ / -，以字母或数字开头"),
    (rf"^{_LABEL} (?P<v>'.*') is the stored department (?P<code>\S+)'s$", "{c} {v} 已是部门 {code} 的名称"),
    (rf"^{_LABEL}: no community with code (?P<code>\S+)$", "{c}：没有编码为 {code} 的社区"),
    (rf"^{_LABEL}: grid (?P<g>\S+) is listed twice$", "{c}：网格 {g} 重复列出"),
    (rf"^{_LABEL}: no current grid with code (?P<g>\S+)$", "{c}：没有编码为 {g} 的现行网格"),
    (rf"^{_LABEL}: grid (?P<g>\S+) is not in community (?P<code>\S+)$", "{c}：网格 {g} 不在社区 {code} 内"),
    (rf"^{_LABEL}: a work-unit branch covers no grids$", "{c}：单位党支部不覆盖网格"),
    (rf"^{_LABEL}: a (?P<kind>\w+) branch covers at least one grid$", "{c}：该类支部至少覆盖一个网格"),
    (r"^grid (?P<g>\S+) already has the active grid branch (?P<b>\S+)$", "网格 {g} 已有现行的网格党支部 {b}"),
    (
        r"^grid (?P<g>\S+) is covered by the grid branch (?P<b>\S+) of row (?P<n>\d+) too$",
        "网格 {g} 也由第 {n} 行的网格党支部 {b} 覆盖",
    ),
    (r"^a site needs the branch's community$", "填写活动阵地须同时填写所属社区"),
    (r"^the site \((?P<xy>[^)]+)\) lies more than (?P<m>\d+) m outside", "活动阵地（{xy}）在所属社区 {m} 米以外"),
    (
        r"^(?P<what>member|branch) (?P<code>\S+) is outside your area(?: (?P<area>\S+))?",
        "{what_zh} {code} 不在您的管辖范围内",
    ),
    (r"^the residence lies outside your area", "居住地不在您的管辖范围内"),
    (r"^grid (?P<g>\S+) is outside your area", "网格 {g} 不在您的管辖范围内"),
    (r"^member_id (?P<v>\S+) appears again \(first on row (?P<n>\d+)\)$", "党员编号 {v} 重复（第 {n} 行已有）"),
    (r"^the row has (?P<n>\d+) fields, the header (?P<w>\d+)", "该行有 {n} 列，表头 {w} 列（值中有未加引号的逗号？）"),
    (r"^column '(?P<col>[^']+)' holds a formula \((?P<v>[^)]*)\)", "“{col}”列是公式（{v}），请粘贴为数值"),
    (
        rf"^{_LABEL} must not start with (?P<v>'.') \(a spreadsheet would run it as a formula\)$",
        "{c}不能以 {v} 开头（表格软件会当作公式）",
    ),
    (rf"^{_LABEL} contains (?P<what>.+)$", "{c}含有{what}"),
    (rf"^{_LABEL} has (?P<n>\d+) characters; at most (?P<m>\d+)$", "{c}有 {n} 个字符，最多 {m} 个"),
    (r"^gridbranch reads values only", ""),  # the formula's second half: said above
    # boundaries: geometry (ingest/boundaries.py)
    (r"^no geometry$", "没有几何图形"),
    (r"^empty geometry$", "几何图形为空"),
    (r"^a (?P<t>\w+): polygons expected", "是 {t}，应为面（多边形）"),
    (r"^points or lines in the collection dropped, its polygons kept$", "已丢弃集合中的点和线，保留其中的面"),
    (r"^coordinates that do not convert to WGS84$", "坐标无法转换为 WGS84"),
    (r"^zero area$", "面积为零"),
    (r"^(?P<n>\d+) zero-area part\(s\) dropped$", "已丢弃 {n} 个面积为零的部分"),
    (
        r"^invalid geometry: (?P<r>.+) \(--repair applies make_valid\)$",
        lambda g: f"几何图形无效：{_geos_zh(g['r'])}（勾选“修复”或用 --repair 以 make_valid 修复）",
    ),
    (
        r"^invalid geometry: (?P<r>.+), and make_valid leaves no surface$",
        lambda g: f"几何图形无效：{_geos_zh(g['r'])}，make_valid 修复后不剩任何面",
    ),
    (
        r"^(?P<r>.+): repaired by make_valid, area (?P<a>\S+) → (?P<b>\S+) m² \((?P<d>\S+) m²\), "
        r"(?P<n>\d+) → (?P<k>\d+) part\(s\)$",
        lambda g: (
            f"{_geos_zh(g['r'])}：已用 make_valid 修复，面积 {g['a']} → {g['b']} 平方米（{g['d']}），"
            f"部分数 {g['n']} → {g['k']}"
        ),
    ),
    (
        r"^falls at (?P<lon>\S+), (?P<lat>\S+) \(WGS84\), (?P<km>\S+) km from (?P<d>.+?)(?P<see> \(see the CRS problem above\))?$",
        lambda g: (
            f"位于 {g['lon']}, {g['lat']}（WGS84），距{g['d']} {g['km']} 公里"
            + ("（见上方的坐标系问题）" if g["see"] else "")
        ),
    ),
    (
        r"^(?P<p>[\d.]+%) of the features' area lies outside (?P<d>.+) as read in (?P<spec>\S+), "
        r"(?P<q>[\d.]+%) if (?P<what>.+): (?P<advice>[^:]+)$",
        _crs_guess,
    ),
    # boundaries: codes and parents
    (r"^code is missing$", "编码为空"),
    (r"^an area code has 12 digits, got (?P<v>.+)$", "区划编码应为 12 位，现为 {v}"),
    (r"^(?P<code>\d+) has no county \(its digits 5–6 are 00\)$", "{code} 没有县级部分（第 5–6 位为 00）"),
    (
        r"^(?P<code>\d+) has a community part \((?P<v>\d+)\) but no township \(000\)$",
        "{code} 有社区部分（{v}）却没有乡镇部分（000）",
    ),
    (r"^township (?P<v>\d+) is out of range", "乡镇部分 {v} 超出范围（街道 001–099，乡镇 100–199）"),
    (r"^community (?P<v>\d+) is out of range \(001–199\)$", "社区部分 {v} 超出范围（001–199）"),
    (r"^a grid code has 15 digits .*, got (?P<v>.+)$", "网格编码应为 15 位（所属社区的 12 位加 3 位序号），现为 {v}"),
    (r"^its first 12 digits \((?P<v>\d+)\) are not a community's code$", "前 12 位（{v}）不是社区编码"),
    (r"^its sequence is 000 \(001–999\)$", "序号为 000（应为 001–999）"),
    (r"^(?P<code>\d+) is not in the district (?P<d>\d+) \((?P<n>[^)]+)\)$", "{code} 不属于本区县 {d}（{n}）"),
    (r"^code (?P<code>\S+) appears again \(first at feature (?P<n>\d+)\)$", "编码 {code} 重复（第 {n} 个要素已有）"),
    (
        r"^(?P<code>\d+) is not under its parent's code (?P<p>\d+) \(its code says its parent is (?P<q>\d+)\)$",
        "{code} 不在上级编码 {p} 之下（按编码其上级应为 {q}）",
    ),
    (r"^(?P<code>\d+) is another district than this deployment's (?P<d>\d+)$", "{code} 是另一个区县，本部署为 {d}"),
    (r"^its parent (?P<p>\S+) \(feature (?P<f>\d+)\) is rejected$", "上级 {p}（第 {f} 个要素）被拒绝"),
    (
        r"^its parent (?P<p>\S+) is neither in the file nor in the database(?P<first> \(import the areas first\))?$",
        lambda g: f"上级 {g['p']} 既不在文件中，也不在数据库中" + ("（请先导入区划）" if g["first"] else ""),
    ),
    (r"^its parent (?P<p>\S+) is a (?P<is>\w+), a (?P<mine>\w+)'s parent is a (?P<want>\w+)$", _parent_level),
    (
        r"^(?P<m>[\d,.]+) m² lie outside its parent (?P<p>\S+) \(tolerance (?P<t>\S+) m²\)$",
        "有 {m} 平方米在上级 {p} 之外（容差 {t} 平方米）",
    ),
    (
        rf"^overlaps (?P<o>\S+) by (?P<m>[\d,.]+) m² {_AT}(?P<s> \(a sliver\))?$",
        lambda g: f"与 {g['o']} 重叠 {g['m']} 平方米，位于 {g['lon']}, {g['lat']}" + ("（碎片）" if g["s"] else ""),
    ),
    (
        rf"^(?P<kind>a gap|a sliver) of (?P<m>[\d,.]+) m² in (?P<code>\S+) that none of its (?P<lv>\w+)s covers "
        rf"{_AT}(?:, bordered by (?P<b>.+))?$",
        _sibling_gap,
    ),
    (
        rf"^a stray part of (?P<m>[\d,.]+) m² {_AT} \(multipart kept\)$",
        "有一块 {m} 平方米的游离部分，位于 {lon}, {lat}（保留为多部件）",
    ),
    (r"^grid (?P<g>\S+) was retired: this import", "网格 {g} 已撤销：导入不会恢复已撤销的网格"),
    (r"^it lies outside your area (?P<a>\S+)$", "不在您的管辖范围 {a} 内"),
    (r"^your own area's boundary is changed by the district$", "本级区域的边界由区县修改"),
    # boundaries: generations
    (
        r"^(?P<d>.+?) has passed \(now (?P<now>[^)]+)\)",
        "{d} 已过去（今天是 {now}）：新一代边界只能今天或以后生效，历史保持不变",
    ),
    (
        r"^the last generation takes effect on (?P<d>.+?): a new",
        "上一代边界于 {d} 生效：新一代须在其后生效（请选更晚的生效日期）",
    ),
    (
        r"^moved from (?P<a>\S+) to (?P<b>\S+): a grid changes its community at once",
        "从 {a} 移至 {b}：网格改属社区即时生效，不能定在以后（请不设生效日期导入）",
    ),
    (
        r"^renamed from (?P<a>.+) at once: names are not versioned, only the boundary waits for (?P<d>.+)$",
        "由“{a}”改名即时生效：名称不分代，只有边界等到 {d} 生效",
    ),
]
_ROW_CATALOGUE = [(re.compile(p), t) for p, t in _ROW_ENTRIES]
_ROW_WHAT = {"member": "党员", "branch": "支部", "department": "部门", "grid": "网格", "community": "社区"}
_UNKNOWN = "有误（{}）"


def _column_zh(label: str, col: str | None) -> str:
    """A column as a reason names it: the file's own heading (“处置时限”), else ours."""
    if col:
        return f"“{col}”"
    name = FIELDS.get(label)
    return f"“{name}”" if name else f"“{label}”"


def _row_part_zh(part: str) -> str | None:
    """The Chinese of one part of a reason, or None when nothing here knows it."""
    for pattern, template in _ROW_CATALOGUE:
        m = pattern.search(part)
        if m:
            g = {k: (v or "") for k, v in m.groupdict().items()}
            if "label" in g:
                g["c"] = _column_zh(g["label"], g.get("col"))
            if "what" in g:
                g["what_zh"] = g["what"] = _ROW_WHAT.get(g["what"], g["what"])
            return template(g) if callable(template) else template.format(**g)
    # the same texts as the API's refusals (coordinates, names, codes, points outside the area)
    if known(part):
        return detail_zh(part, status=422)
    # "CODE: reason" (a feature's code, or a column's label, before what is wrong with it)
    head = re.match(rf"^(?:(?P<code>\d+)|{_LABEL}): (?P<rest>.+)$", part)
    if head:
        rest = _row_part_zh(head["rest"])
        if rest is not None:
            return f"{head['code'] or _column_zh(head['label'], head['col'])}：{rest}"
    return None


def row_reason_zh(reason: str) -> str:
    """The Chinese of an import's reason for refusing a row or a feature (its parts,
    joined by "; ", each translated); what the catalogue does not know keeps its English
    inside a Chinese sentence."""
    whole = _row_part_zh(reason.strip())  # some reasons hold a "; " of their own
    if whole is not None:
        return whole
    parts = (p.strip() for p in reason.split("; ") if p.strip())
    return "；".join(zh for p in parts if (zh := _part_or_unknown(p)))


def _part_or_unknown(part: str) -> str:
    zh = _row_part_zh(part)
    return _UNKNOWN.format(part) if zh is None else zh


def row_reason_known(reason: str) -> bool:
    """Whether every part of ``reason`` has its own Chinese (tests)."""
    return _row_part_zh(reason.strip()) is not None or all(
        _row_part_zh(p.strip()) is not None for p in reason.split("; ") if p.strip()
    )
