"""A realistic synthetic utility for demos, tests and benchmarks (``meterline seed``).

``build_utility(n)`` makes a water utility of ``n`` metering points, deterministic for a seed:

* districts (城东区, 高新区, ...), meter books of about 300 accounts with a reader and a
  supervisor, monthly (``M``) and bi-monthly (``B``) cycles, route order;
* customers and accounts: residential (居民) with household sizes 1–7, non-residential (非居民)
  and special-industry (特种行业) use types, a few shared meters serving several dwellings,
  floor areas;
* meters: sizes DN15–DN150, five-digit registers for small meters and six for large ones,
  models and protocols in the mix a utility has today (NB-IoT over CoAP and MQTT, LoRaWAN,
  wired M-Bus, Modbus for large meters, handheld walk-by), addresses fitting the protocol
  (IMEI, devEUI, M-Bus secondary address);
* master–sub trees (总分表), some two levels deep: a compound master meter over building master
  meters over household meters, each tree with an apportionment policy;
* a consumption profile per meter (mean litres per day) that ``ingest.synthetic`` turns into a
  plausible history of cumulative register readings, masters reading the sum of their subs plus
  a loss (non-revenue water).
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from dataclasses import dataclass, field
from decimal import Decimal

from meterline.store.registry import RegistryRow

DISTRICTS = [("D01", "城东区"), ("D02", "城西区"), ("D03", "城南区"), ("D04", "城北区"),
             ("D05", "高新区"), ("D06", "经济开发区"), ("D07", "老城区"), ("D08", "滨江新区")]
READERS = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强", "周杰", "吴婷", "徐磊", "孙丽",
           "马超", "朱琳", "胡军", "郭涛", "林峰", "何静", "高翔", "罗敏"]
SUPERVISORS = ["计量主管-钱敏", "计量主管-冯刚", "计量主管-蒋丽", "计量主管-沈涛"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国建华志强晓东海燕玉兰春梅文辉俊杰"
ROADS = ["人民路", "解放路", "中山路", "建设路", "和平路", "新华路", "长江路", "黄河路", "文化路", "胜利路",
         "光明路", "复兴路", "滨江大道", "科技大道", "学府路", "花园路"]
COMPOUNDS = ["阳光花园", "翠湖苑", "金色家园", "锦绣华庭", "碧水湾", "书香名邸", "幸福里", "紫荆城",
             "天悦府", "御景湾", "春江花月", "枫林雅苑"]
BUSINESSES = ["餐饮有限公司", "商贸有限公司", "物业服务有限公司", "酒店管理有限公司", "洗车服务部",
              "食品加工厂", "医院", "学校", "宾馆", "浴池"]

# protocol mix of a utility today, with a model and how the meter is addressed
PROTOCOL_MIX = [
    ("coap", 0.25, "LXSY-15E NB-IoT"),
    ("mqtt", 0.15, "LXSY-20E NB-IoT"),
    ("lorawan", 0.25, "Kamstrup flowIQ 2200"),
    ("mbus", 0.10, "LXSY-20 M-Bus"),
    ("handheld", 0.25, "LXS-15C mechanical"),
]
HOUSEHOLD = [(1, 0.10), (2, 0.25), (3, 0.35), (4, 0.18), (5, 0.08), (6, 0.03), (7, 0.01)]
LITRES_PER_PERSON_DAY = 110.0


@dataclass
class MeterProfile:
    serial: str
    protocol: str
    mean_l_per_day: float  # own consumption (for masters: 0, they read their subs)
    initial_register: int  # litres
    parent: str | None = None
    loss: float = 0.0  # masters: share lost between master and subs (non-revenue water)
    children: list[str] = field(default_factory=list)
    cycle: str = "M"
    read_day: int = 25
    register_modulus: int = 10**8


@dataclass
class SyntheticUtility:
    rows: list[RegistryRow]
    profiles: dict[str, MeterProfile]  # by serial, in registry order (trees contiguous, leaves first)
    seed: int

    @property
    def n_meters(self) -> int:
        return len(self.profiles)


def _pick(rng: random.Random, table: list[tuple[object, float]]) -> object:
    x = rng.random()
    acc = 0.0
    for value, p in table:
        acc += p
        if x < acc:
            return value
    return table[-1][0]


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def _address(rng: random.Random, district: str, compound: str | None, building: int, unit: int, room: int) -> str:
    if compound:
        return f"{district}{compound}{building}栋{unit}单元{room}室"
    return f"{district}{rng.choice(ROADS)}{rng.randint(1, 999)}号"


def _comm_address(protocol: str, index: int, rng: random.Random) -> str | None:
    if protocol in ("coap", "mqtt"):
        return f"86{index:013d}"  # IMEI-shaped
    if protocol == "lorawan":
        return f"70b3d5{index:010x}"  # devEUI under an OUI
    if protocol == "mbus":
        return f"{index % 10**8:08d}"  # M-Bus secondary address (ident number)
    return None


def build_utility(n_meters: int, *, seed: int = 42, tree_share: float = 0.12, company_prefix: str = "",
                  address_base: int | None = None) -> SyntheticUtility:
    """Return the registry rows and meter profiles of a synthetic utility of ``n_meters`` meters.

    ``company_prefix`` prefixes codes and serials; meter addresses (IMEI, devEUI, M-Bus) are
    numbered from ``address_base`` (default: 0 without a prefix, else a base of millions derived
    from it), so several companies can be seeded side by side in one deployment.
    """
    if address_base is None:
        address_base = 0 if not company_prefix else (zlib.crc32(company_prefix.encode()) % 89 + 1) * 10**6
    if n_meters < 1:
        raise ValueError("n_meters must be >= 1")
    rng = random.Random(seed)
    rows: list[RegistryRow] = []
    profiles: dict[str, MeterProfile] = {}
    counter = {"meter": 0, "account": 0, "customer": 0}
    book_state = {"book": 0, "in_book": 10**9, "code": "", "name": "", "reader": "", "supervisor": "",
                  "cycle": "M", "district": DISTRICTS[0]}

    def next_book(district: tuple[str, str]) -> None:
        book_state["book"] += 1
        b = book_state["book"]
        book_state.update(
            code=f"{company_prefix}B{b:05d}", name=f"{district[1]}第{b}册", reader=READERS[b % len(READERS)],
            supervisor=SUPERVISORS[b % len(SUPERVISORS)], cycle="B" if b % 10 == 0 else "M",
            in_book=0, district=district,
        )

    def new_serial() -> tuple[str, int]:
        counter["meter"] += 1
        return f"{company_prefix}WM{counter['meter']:08d}", counter["meter"] + address_base

    def add(*, account: bool, use_type: str, household: int, dwellings: int, size: str, protocol: str,
            model: str, mean: float, parent: str | None, policy: str | None, district: tuple[str, str],
            address: str, name: str, kind: str, digits: int, area: float | None) -> str:
        serial, idx = new_serial()
        if account and book_state["in_book"] >= 300:
            next_book(district)
        acc_code = cust_code = None
        if account:
            counter["account"] += 1
            counter["customer"] += 1
            acc_code = f"{company_prefix}A{counter['account']:08d}"
            cust_code = f"{company_prefix}C{counter['customer']:08d}"
            book_state["in_book"] += 1
        initial = rng.randint(0, 3000) * 1000 + rng.randint(0, 999)
        opened = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randint(0, 3000))
        tariff = {"residential": "water-residential", "non_residential": "water-nonresidential",
                  "special": "water-special"}[use_type]
        rows.append(RegistryRow(
            customer_code=cust_code, customer_name=name if account else None,
            customer_kind=kind if account else "person",
            phone=f"13{rng.randint(0, 999999999):09d}" if account and kind == "person" else None,
            id_number=None,
            invoice_title=name if account and kind == "organisation" else None,
            tax_id=f"91{rng.randint(0, 10**16 - 1):016d}" if account and kind == "organisation" else None,
            account_code=acc_code, address=address if account else None,
            district_code=district[0] if account else None, district_name=district[1] if account else None,
            use_type=use_type if account else None, tariff_id=tariff if account else None,
            household_size=household, dwellings=dwellings,
            floor_area_m2=None if area is None else Decimal(f"{area:.2f}"),
            account_status="active", opened_on=opened if account else None,
            book_code=book_state["code"] if account else None, book_name=book_state["name"] if account else None,
            reader=book_state["reader"] if account else None, supervisor=book_state["supervisor"] if account else None,
            cycle=book_state["cycle"] if account else None, route_order=book_state["in_book"] if account else None,
            meter_serial=serial, comm_address=_comm_address(protocol, idx, rng), model=model, protocol=protocol,
            medium="water", size=size, multiplier=1, register_digits=digits, display_unit="m3",
            parent_serial=parent, apportion_policy=policy, installed_on=opened, initial_register=initial,
        ))
        profiles[serial] = MeterProfile(
            serial=serial, protocol=protocol, mean_l_per_day=mean, initial_register=initial, parent=parent,
            cycle=book_state["cycle"], read_day=20 + book_state["book"] % 8,
            register_modulus=10**digits * 1000,
        )
        if parent:
            profiles[parent].children.append(serial)
        return serial

    def ordinary(district: tuple[str, str], parent: str | None, compound: str | None, building: int, room: int) -> None:
        x = rng.random()
        if x < 0.85 or compound:
            use_type, kind = "residential", "person"
            household = int(_pick(rng, HOUSEHOLD))  # type: ignore[arg-type]
            dwellings = rng.choice((2, 3, 4)) if rng.random() < 0.01 else 1
            mean = household * dwellings * LITRES_PER_PERSON_DAY * rng.uniform(0.6, 1.4)
            if rng.random() < 0.04:
                mean = 0.0  # vacant home
            size, digits, name = "DN15", 5, _name(rng)
            area = round(rng.uniform(45, 160), 2)
        elif x < 0.97:
            use_type, kind, household, dwellings = "non_residential", "organisation", 1, 1
            mean = rng.uniform(500, 8000)
            size, digits = rng.choice(("DN20", "DN25", "DN40", "DN50")), 6
            name = district[1][:2] + rng.choice(BUSINESSES)
            area = round(rng.uniform(50, 2000), 2)
        else:
            use_type, kind, household, dwellings = "special", "organisation", 1, 1
            mean = rng.uniform(2000, 20000)
            size, digits = rng.choice(("DN25", "DN40")), 6
            name = district[1][:2] + rng.choice(("洗浴中心", "洗车场", "纯净水厂"))
            area = round(rng.uniform(80, 800), 2)
        protocol, model = _protocol(rng, size)
        address = _address(rng, district[1], compound, building, 1 + room // 100, room)
        add(account=True, use_type=use_type, household=household, dwellings=dwellings, size=size,
            protocol=protocol, model=model, mean=mean, parent=parent, policy=None, district=district,
            address=address, name=name, kind=kind, digits=digits, area=area)

    district = DISTRICTS[0]
    next_book(district)
    while counter["meter"] < n_meters:
        district = DISTRICTS[(counter["meter"] // 2000) % len(DISTRICTS)]
        left = n_meters - counter["meter"]
        if left >= 40 and rng.random() < tree_share / 20:
            # a compound: master meter, 2–4 building masters (second level) or households directly
            compound = rng.choice(COMPOUNDS)
            policy = rng.choice(("master_account", "by_consumption", "equal", "by_area"))
            master = add(account=policy == "master_account", use_type="non_residential", household=1, dwellings=1,
                         size=rng.choice(("DN100", "DN150")), protocol="modbus", model="MAG-8000 Modbus",
                         mean=0.0, parent=None, policy=policy, district=district,
                         address=f"{district[1]}{compound}小区总表", name=f"{compound}物业服务有限公司",
                         kind="organisation", digits=6, area=None)
            profiles[master].loss = rng.uniform(0.03, 0.15)
            budget = min(left - 1, rng.randint(20, 120))
            if rng.random() < 0.5 and budget >= 12:
                buildings = rng.randint(2, 4)
                for b in range(1, buildings + 1):
                    bmaster = add(account=False, use_type="non_residential", household=1, dwellings=1, size="DN50",
                                  protocol="mbus", model="LXSY-50 M-Bus", mean=0.0, parent=master, policy="by_consumption",
                                  district=district, address="", name="", kind="organisation", digits=6, area=None)
                    profiles[bmaster].loss = rng.uniform(0.01, 0.06)
                    for room in range(max(1, (budget - buildings) // buildings)):
                        if counter["meter"] >= n_meters:
                            break
                        ordinary(district, bmaster, compound, b, 101 + room)
            else:
                for room in range(budget):
                    if counter["meter"] >= n_meters:
                        break
                    ordinary(district, master, compound, 1, 101 + room)
        else:
            ordinary(district, None, None, 0, 0)
    return SyntheticUtility(rows=rows, profiles=profiles, seed=seed)


def _protocol(rng: random.Random, size: str) -> tuple[str, str]:
    if size in ("DN40", "DN50") and rng.random() < 0.5:
        return "modbus", "LXSY-50 Modbus"
    x = rng.random()
    acc = 0.0
    for protocol, share, model in PROTOCOL_MIX:
        acc += share
        if x < acc:
            return protocol, model
    return PROTOCOL_MIX[-1][0], PROTOCOL_MIX[-1][2]
