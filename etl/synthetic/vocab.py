"""The synthetic world's vocabulary: real cities, real dishes and the hidden attributes of dishes.

The attributes (served hot or cold, spicy, sweet, breakfast or late-night food, regional
speciality) drive the hidden click model but never become structured columns of the POI table:
they reach the data only through dish names, shop names and introductions, where a pretrained
language model can read them and an ID model cannot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    name: str
    province: str
    spring_temp_c: float  # typical daily mean in the simulated season
    lat: float
    lon: float
    districts: tuple[str, ...]


@dataclass(frozen=True)
class Dish:
    name: str  # the kind of food, as a person would say it
    short: str  # the word a shop name uses
    category: str  # the coarse structured cuisine column (reveals no hidden attribute)
    menu: tuple[str, ...]  # main dish names
    temperature: int  # +1 served hot, -1 served cold, 0 neither
    spicy: int
    sweet: int
    meal: str  # "breakfast", "late_night" or "any"
    province: str  # regional speciality of this province, or "" for none


CITIES: tuple[City, ...] = (
    City("Beijing", "Beijing", 14.0, 39.90, 116.40, ("Chaoyang", "Haidian", "Dongcheng", "Xicheng")),
    City("Shanghai", "Shanghai", 16.0, 31.23, 121.47, ("Pudong", "Jing'an", "Xuhui", "Huangpu")),
    City("Guangzhou", "Guangdong", 23.0, 23.13, 113.26, ("Tianhe", "Yuexiu", "Haizhu", "Panyu")),
    City("Shenzhen", "Guangdong", 24.0, 22.54, 114.06, ("Futian", "Nanshan", "Luohu", "Bao'an")),
    City("Chengdu", "Sichuan", 17.0, 30.57, 104.07, ("Jinjiang", "Wuhou", "Qingyang", "Chenghua")),
    City("Chongqing", "Chongqing", 18.0, 29.56, 106.55, ("Yuzhong", "Jiangbei", "Nan'an", "Shapingba")),
    City("Xi'an", "Shaanxi", 15.0, 34.34, 108.94, ("Beilin", "Yanta", "Lianhu", "Xincheng")),
    City("Wuhan", "Hubei", 17.0, 30.59, 114.31, ("Wuchang", "Hankou", "Hanyang", "Hongshan")),
    City("Changsha", "Hunan", 17.0, 28.23, 112.94, ("Furong", "Yuelu", "Tianxin", "Kaifu")),
    City("Harbin", "Heilongjiang", 6.0, 45.80, 126.53, ("Daoli", "Nangang", "Daowai", "Xiangfang")),
    City("Hangzhou", "Zhejiang", 17.0, 30.27, 120.16, ("Xihu", "Shangcheng", "Gongshu", "Binjiang")),
    City("Lanzhou", "Gansu", 12.0, 36.06, 103.83, ("Chengguan", "Qilihe", "Anning", "Xigu")),
)


def _d(name, short, category, menu, temperature=0, spicy=0, sweet=0, meal="any", province=""):
    return Dish(name, short, category, tuple(menu), temperature, spicy, sweet, meal, province)


DISHES: tuple[Dish, ...] = (
    # served cold
    _d(
        "liangpi cold skin noodles",
        "Liangpi",
        "Noodles & rice",
        ["cold skin noodles", "chilled sesame liangpi", "cucumber liangpi"],
        -1,
        1,
        0,
        "any",
        "Shaanxi",
    ),
    _d(
        "iced milk tea",
        "Milk Tea",
        "Drinks & desserts",
        ["iced brown sugar milk tea", "iced jasmine milk tea", "iced oolong latte"],
        -1,
        0,
        1,
    ),
    _d(
        "mango pomelo sago",
        "Sweet Soup",
        "Drinks & desserts",
        ["chilled mango pomelo sago", "coconut sago", "iced double-skin milk"],
        -1,
        0,
        1,
        "any",
        "Guangdong",
    ),
    _d(
        "cold sesame noodles",
        "Cold Noodle",
        "Noodles & rice",
        ["cold sesame noodles", "chilled buckwheat noodles", "smashed cucumber salad"],
        -1,
        0,
        0,
    ),
    _d(
        "shaved ice",
        "Shaved Ice",
        "Drinks & desserts",
        ["red bean shaved ice", "mango snow ice", "taro ball shaved ice"],
        -1,
        0,
        1,
    ),
    _d(
        "sushi and sashimi",
        "Sushi",
        "Restaurant",
        ["salmon sashimi", "california roll", "tuna nigiri"],
        -1,
        0,
        0,
    ),
    _d(
        "fruit salad bowls",
        "Fruit Bar",
        "Drinks & desserts",
        ["watermelon bowl", "mixed fruit salad", "yogurt fruit cup"],
        -1,
        0,
        1,
    ),
    _d(
        "ice cream",
        "Gelato",
        "Drinks & desserts",
        ["vanilla sundae", "matcha ice cream", "chocolate gelato"],
        -1,
        0,
        1,
    ),
    _d(
        "mouthwatering chicken in chili oil",
        "Cold Chicken",
        "Restaurant",
        ["kou shui ji cold chicken", "chili oil sliced beef", "cold wood-ear salad"],
        -1,
        1,
        0,
        "any",
        "Sichuan",
    ),
    # served hot
    _d(
        "Chongqing hot pot",
        "Hot Pot",
        "Restaurant",
        ["numbing spicy beef tallow hot pot", "tripe hot pot", "duck blood hot pot"],
        1,
        1,
        0,
        "any",
        "Chongqing",
    ),
    _d(
        "Lanzhou hand-pulled beef noodles",
        "Beef Noodle",
        "Noodles & rice",
        ["Lanzhou beef noodle soup", "hand-pulled noodles with beef", "braised beef slices"],
        1,
        0,
        0,
        "any",
        "Gansu",
    ),
    _d(
        "Wuhan hot dry noodles",
        "Hot Dry Noodle",
        "Noodles & rice",
        ["hot dry noodles with sesame paste", "doupi sticky rice", "egg wine soup"],
        1,
        0,
        0,
        "breakfast",
        "Hubei",
    ),
    _d(
        "Cantonese claypot rice",
        "Claypot",
        "Noodles & rice",
        ["claypot rice with Chinese sausage", "claypot chicken rice", "claypot beef rice"],
        1,
        0,
        0,
        "any",
        "Guangdong",
    ),
    _d(
        "rice noodle rolls",
        "Cheung Fun",
        "Street food",
        ["shrimp rice noodle rolls", "beef cheung fun", "egg rice noodle rolls"],
        1,
        0,
        0,
        "breakfast",
        "Guangdong",
    ),
    _d(
        "Cantonese barbecue",
        "Roast House",
        "Restaurant",
        ["char siu barbecue pork", "crispy roast goose", "soy sauce chicken"],
        1,
        0,
        1,
        "any",
        "Guangdong",
    ),
    _d(
        "mapo tofu and twice-cooked pork",
        "Sichuan Kitchen",
        "Restaurant",
        ["mapo tofu", "twice-cooked pork", "kung pao chicken"],
        1,
        1,
        0,
        "any",
        "Sichuan",
    ),
    _d(
        "Chengdu dan dan noodles",
        "Dan Dan",
        "Noodles & rice",
        ["dan dan noodles", "spicy wontons in chili oil", "sweet water noodles"],
        1,
        1,
        0,
        "any",
        "Sichuan",
    ),
    _d(
        "Hunan chili fried pork",
        "Xiang Kitchen",
        "Restaurant",
        ["chili fried pork", "steamed fish head with chopped chili", "Mao's braised pork"],
        1,
        1,
        0,
        "any",
        "Hunan",
    ),
    _d(
        "Peking roast duck",
        "Roast Duck",
        "Restaurant",
        ["Peking duck with pancakes", "duck bone soup", "scallion pancakes"],
        1,
        0,
        0,
        "any",
        "Beijing",
    ),
    _d(
        "Beijing zhajiang noodles",
        "Zhajiang",
        "Noodles & rice",
        ["zhajiang noodles", "fried liver stew", "Beijing meat pie"],
        1,
        0,
        0,
        "any",
        "Beijing",
    ),
    _d(
        "xiaolongbao soup dumplings",
        "Dumpling House",
        "Street food",
        ["pork xiaolongbao", "crab roe soup dumplings", "pan-fried shengjian bao"],
        1,
        0,
        0,
        "breakfast",
        "Shanghai",
    ),
    _d(
        "Shanghai scallion oil noodles",
        "Noodle Bar",
        "Noodles & rice",
        ["scallion oil noodles", "braised pork belly noodles", "sweet and sour spare ribs"],
        1,
        0,
        1,
        "any",
        "Shanghai",
    ),
    _d(
        "roujiamo and biangbiang noodles",
        "Roujiamo",
        "Street food",
        ["roujiamo pork burger", "biangbiang noodles", "yangrou paomo lamb soup"],
        1,
        1,
        0,
        "any",
        "Shaanxi",
    ),
    _d(
        "guobaorou sweet and sour pork",
        "Northeast Kitchen",
        "Restaurant",
        ["guobaorou crispy sweet and sour pork", "pork stewed with vermicelli", "Harbin red sausage"],
        1,
        0,
        1,
        "any",
        "Heilongjiang",
    ),
    _d(
        "West Lake vinegar fish and Dongpo pork",
        "Hangzhou Kitchen",
        "Restaurant",
        ["West Lake vinegar fish", "Dongpo pork", "Longjing tea shrimp"],
        1,
        0,
        1,
        "any",
        "Zhejiang",
    ),
    _d("Japanese ramen", "Ramen", "Noodles & rice", ["tonkotsu ramen", "miso ramen", "gyoza"], 1, 0, 0),
    # breakfast
    _d(
        "jianbing crepes",
        "Jianbing",
        "Street food",
        ["jianbing with egg and crispy cracker", "jianbing with sausage", "hot soy milk"],
        1,
        0,
        0,
        "breakfast",
    ),
    _d(
        "soy milk and youtiao",
        "Breakfast Shop",
        "Street food",
        ["fried dough sticks youtiao", "hot soy milk", "tea eggs"],
        1,
        0,
        0,
        "breakfast",
    ),
    _d(
        "steamed buns",
        "Baozi",
        "Street food",
        ["pork steamed buns", "vegetable baozi", "millet congee"],
        1,
        0,
        0,
        "breakfast",
    ),
    _d(
        "congee",
        "Congee",
        "Street food",
        ["century egg and pork congee", "pumpkin congee", "fried dough sticks"],
        1,
        0,
        0,
        "breakfast",
    ),
    # late night
    _d(
        "spicy crayfish",
        "Crayfish",
        "Street food",
        ["spicy crayfish", "garlic crayfish", "cold beer"],
        1,
        1,
        0,
        "late_night",
        "Hubei",
    ),
    _d(
        "lamb skewers barbecue",
        "BBQ Skewers",
        "Street food",
        ["cumin lamb skewers", "grilled chicken wings", "grilled leek"],
        1,
        1,
        0,
        "late_night",
    ),
    _d(
        "Changsha stinky tofu",
        "Stinky Tofu",
        "Street food",
        ["black stinky tofu", "spicy shrimp", "sugar oil cakes"],
        1,
        1,
        0,
        "late_night",
        "Hunan",
    ),
    _d(
        "fried chicken and beer",
        "Fried Chicken",
        "Fast food",
        ["crispy fried chicken", "honey garlic wings", "draft beer"],
        1,
        0,
        0,
        "late_night",
    ),
    _d(
        "midnight wonton soup",
        "Wonton",
        "Noodles & rice",
        ["shrimp wonton soup", "wonton noodles", "fried wontons"],
        1,
        0,
        0,
        "late_night",
    ),
    _d(
        "hot and sour rice noodles",
        "Suanla Fen",
        "Street food",
        ["hot and sour sweet potato noodles", "spicy pig trotters", "fried peanuts"],
        1,
        1,
        0,
        "late_night",
        "Chongqing",
    ),
    # neither hot nor cold in spirit
    _d("pizza", "Pizza", "Fast food", ["pepperoni pizza", "margherita pizza", "garlic bread"]),
    _d("burgers and fries", "Burger", "Fast food", ["beef burger", "chicken burger", "french fries"]),
    _d(
        "bibimbap",
        "Korean Kitchen",
        "Restaurant",
        ["stone pot bibimbap", "kimchi pancake", "fried chicken"],
        0,
        1,
    ),
    _d(
        "bubble tea",
        "Tea Bar",
        "Drinks & desserts",
        ["pearl milk tea", "fresh fruit tea", "cheese foam tea"],
        -1,
        0,
        1,
    ),
)

SHOP_NAME_TEMPLATES: tuple[str, ...] = (
    "{owner}'s {short}",
    "Golden {short}",
    "{short} House",
    "{owner} Family {short}",
    "Lucky {short} Corner",
    "Old {city} {short}",
    "{short} No. {number}",
    "Happy {short} Kitchen",
)

OWNERS: tuple[str, ...] = (
    "Aunt Li",
    "Uncle Wang",
    "Chef Zhang",
    "Old Liu",
    "Brother Chen",
    "Granny Zhao",
    "Sister Huang",
    "Master Wu",
    "Little Zhou",
    "Boss Xu",
)

INTRO_TEMPLATES: tuple[str, ...] = (
    "We serve {dish} made fresh to order.",
    "A neighbourhood favourite for {dish}.",
    "Our cooks have specialised in {dish} for years.",
    "Simple, honest {dish} at fair prices.",
)

# Phrases that make hidden attributes readable in the introduction text.
TEMPERATURE_PHRASES = {
    -1: "Served chilled, perfect to cool down.",
    1: "Served piping hot.",
    0: "",
}
SPICY_PHRASE = "Fiery chili and numbing pepper for spice lovers."
SWEET_PHRASE = "A sweet treat."
MEAL_PHRASES = {
    "breakfast": "Open early for a quick breakfast.",
    "late_night": "Open late for night owls.",
    "any": "",
}
REGION_PHRASE = "Authentic {province} flavour."

TAGS: tuple[str, ...] = (
    "free delivery",
    "new shop",
    "top rated",
    "discount",
    "fast delivery",
    "family friendly",
    "takeaway only",
    "staff pick",
)

NICK_ADJECTIVES: tuple[str, ...] = (
    "Happy",
    "Sleepy",
    "Hungry",
    "Lucky",
    "Quiet",
    "Brave",
    "Sunny",
    "Clever",
    "Lazy",
    "Spicy",
)
NICK_NOUNS: tuple[str, ...] = ("Panda", "Tiger", "Dumpling", "Rabbit", "Cloud", "Noodle", "Fox", "Koi")
GENDERS: tuple[str, ...] = ("female", "male", "unknown")
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
DEVICES: tuple[str, ...] = ("ios", "android", "mini_program")
WEATHERS: tuple[str, ...] = ("sunny", "cloudy", "rainy", "snowy")
LOCATION_TYPES: tuple[str, ...] = ("home", "office", "campus", "hotel")
DISTRICT_TYPE_OF_LOCATION = {
    "home": "residential",
    "office": "business district",
    "campus": "university",
    "hotel": "scenic area",
}
# Relative request volume by hour of day (meal peaks at breakfast, lunch, dinner, late night).
HOUR_WEIGHTS: tuple[float, ...] = (
    2.5,
    1.5,
    0.8,
    0.3,
    0.3,
    0.5,
    2.5,
    4.0,
    4.5,
    3.0,
    3.0,
    8.0,
    10.0,
    6.0,
    3.0,
    3.0,
    4.0,
    7.0,
    9.0,
    6.0,
    4.0,
    4.0,
    4.5,
    3.5,
)
